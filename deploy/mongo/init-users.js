// MongoDB users of Giliran: one per service, each owning its own database, plus an operator.
// Run by the mongo image on first start (/docker-entrypoint-initdb.d, as the root user) and
// again by hand after a password change (deploy/README.md, "Key rotation"): it creates what
// is missing and resets the passwords of what exists. Passwords come from the environment
// (MONGO_PASSWORD_<SERVICE>, MONGO_PASSWORD_OPS); nothing secret is in this file.
// tests/unit/test_compose.py reads the ACCESS block below and checks it against the code.

// ACCESS-BEGIN
const ACCESS = {
  // Each service's own database is "<prefix>_<service>" (giliran.settings.database_name).
  "services": ["intake", "queue", "notify", "reporting"],
  // The shared "<prefix>_auth" database (docs/decisions/0040): what every service may do to
  // each of its collections. Logins open and close sessions and count failed tries (a
  // throttle) and spend single-use login forms; every service appends to the audit trail;
  // accounts and API tokens are written only by the operator's CLI.
  "auth": {
    "users": ["find"],
    "tokens": ["find", "createCollection", "createIndex"],
    "sessions": ["find", "insert", "update", "remove", "createCollection", "createIndex"],
    "login_failures": ["find", "insert", "update", "remove", "createCollection", "createIndex"],
    "login_forms": ["find", "insert", "remove", "createCollection", "createIndex"],
    "audit": ["find", "insert", "createCollection", "createIndex"]
  }
};
// ACCESS-END

const prefix = process.env.GILIRAN_DB_PREFIX || "giliran";
const admin = db.getSiblingDB("admin");

function password(name) {
  const value = process.env["MONGO_PASSWORD_" + name.toUpperCase()];
  if (!value) {
    throw new Error("MONGO_PASSWORD_" + name.toUpperCase() + " is not set");
  }
  return value;
}

function ensureRole(role, privileges) {
  if (admin.getRole(role)) {
    admin.updateRole(role, { privileges: privileges, roles: [] });
  } else {
    admin.createRole({ role: role, privileges: privileges, roles: [] });
  }
}

function ensureUser(user, pwd, roles) {
  if (admin.getUser(user)) {
    admin.updateUser(user, { pwd: pwd, roles: roles });
  } else {
    admin.createUser({ user: user, pwd: pwd, roles: roles });
  }
}

const authRole = prefix + "_auth_access";
ensureRole(
  authRole,
  Object.entries(ACCESS.auth).map(([collection, actions]) => ({
    resource: { db: prefix + "_auth", collection: collection },
    actions: actions,
  })),
);

for (const service of ACCESS.services) {
  ensureUser(prefix + "_" + service, password(service), [
    { role: "readWrite", db: prefix + "_" + service },
    { role: authRole, db: "admin" },
  ]);
}

// The operator: `giliran accounts ...`, `giliran reporting rebuild` (writes <prefix>_rebuild_*),
// `giliran keys rotate-nik`, mongodump and mongorestore.
ensureUser(prefix + "_ops", password("ops"), [
  { role: "readWriteAnyDatabase", db: "admin" },
  { role: "backup", db: "admin" },
  { role: "restore", db: "admin" },
]);
print("giliran: users " + ACCESS.services.map((s) => prefix + "_" + s).join(", ") + ", " + prefix + "_ops ready");
