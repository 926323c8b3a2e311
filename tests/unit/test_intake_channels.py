"""Who may register through which channel (ADR 0102): the pure rule, every role and site."""

from __future__ import annotations

import pytest

from giliran.auth import ALL_SITES, Principal, Role
from giliran.contracts import Channel
from services.intake.domain import check_channel
from services.intake.errors import ChannelForbidden

SITE = "cikarang-utara"


def who(role: Role, site: str = SITE) -> Principal:
    return Principal(f"{role.value}-1", role, site, "token")


@pytest.mark.parametrize("caller", [None, *(who(r) for r in Role)])
def test_online_is_open_to_anyone(caller: Principal | None) -> None:
    check_channel(Channel.ONLINE, SITE, caller)


@pytest.mark.parametrize("role", list(Role))
def test_only_a_kiosk_of_the_site_registers_as_the_kiosk(role: Role) -> None:
    if role is Role.KIOSK:
        check_channel(Channel.KIOSK, SITE, who(role))
        check_channel(Channel.KIOSK, SITE, who(role, ALL_SITES))
    else:
        with pytest.raises(ChannelForbidden):
            check_channel(Channel.KIOSK, SITE, who(role))
    with pytest.raises(ChannelForbidden):
        check_channel(Channel.KIOSK, SITE, who(role, "botram-babelan"))


def test_nobody_signed_in_uses_the_kiosk_or_the_counter() -> None:
    for channel in (Channel.KIOSK, Channel.COUNTER):
        with pytest.raises(ChannelForbidden) as refused:
            check_channel(channel, SITE, None)
        assert refused.value.message_id.startswith("Kolom 'channel'")
        assert refused.value.http_status == 403


@pytest.mark.parametrize("role", list(Role))
def test_only_staff_of_the_site_register_at_the_counter(role: Role) -> None:
    if role in (Role.OFFICER, Role.SUPERVISOR, Role.ADMIN):
        check_channel(Channel.COUNTER, SITE, who(role))
    else:
        with pytest.raises(ChannelForbidden):
            check_channel(Channel.COUNTER, SITE, who(role))
