"""The operator's tools: the `giliran` command, the embedded servers, the office LAN, the edge
sites, NATS permissions and the docs generator. They may import the services and the kernel;
neither imports them (import-linter's layers contract)."""
