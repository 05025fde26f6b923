"""
Talking to the ACME server, with certbot's C{acme} library.

The library is blocking (C{requests}): each function here is one step run
in a thread by L{multiport.acme.service}, which publishes the challenges'
answers on the reactor between the steps.  The library has no TLS-ALPN-01
support: its key authorization is computed here and its certificate built
by L{multiport.acme.alpn}.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import cast

from acme import challenges, client, crypto_util, messages
from attrs import frozen
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.b64 import b64encode
from josepy.jwk import JWKRSA

from multiport.acme.config import HTTP_01, TLS_ALPN_01, AcmeConfig
from multiport.acme.store import AcmeStore

#: Seconds to wait for the server to validate and issue one order.
ORDER_DEADLINE = 90
USER_AGENT = "multiport (acme-python)"
#: Seconds one request to the server may take: the thread it blocks is
#: joined when the daemon stops.
NETWORK_TIMEOUT = 15


class AcmeError(Exception):
    """
    An order failed; the message says where and why.
    """


@frozen
class Challenge:
    """
    One challenge chosen for one name of an order.

    @ivar name: The DNS name it proves.
    @ivar kind: C{"http-01"} or C{"tls-alpn-01"}.
    @ivar token: The challenge's token.
    @ivar keyAuthorization: What the server expects to see.
    """

    name: str
    kind: str
    token: str
    keyAuthorization: str
    body: messages.ChallengeBody


@frozen
class Pending:
    """
    An order placed, its challenges chosen but not yet answered.
    """

    acme: client.ClientV2
    order: messages.OrderResource
    challenges: tuple[Challenge, ...]
    key: bytes


def connect(config: AcmeConfig, store: AcmeStore) -> client.ClientV2:
    """
    A client with this daemon's account (registered the first time).
    """
    pem = store.accountKey()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey), "the account key is RSA"
    jwk = JWKRSA(key=key)
    # requests takes a CA file's path where the library says bool.
    verify = cast(bool, str(config.directoryCA) if config.directoryCA else True)
    net = client.ClientNetwork(
        jwk, verify_ssl=verify, user_agent=USER_AGENT, timeout=NETWORK_TIMEOUT
    )
    directory = client.ClientV2.get_directory(config.directory, net)
    acme = client.ClientV2(directory, net)
    kept = store.account()
    if kept is not None:
        account = messages.RegistrationResource.from_json(kept)
        net.account = account
        if store.contact() != config.email:
            _updateContact(acme, account, config.email, store)
        return acme
    registration = messages.NewRegistration.from_data(
        email=config.email, terms_of_service_agreed=True
    )
    account = acme.new_account(registration)
    store.keepAccount(account.to_json(), config.email)
    return acme


def _updateContact(
    acme: client.ClientV2,
    account: messages.RegistrationResource,
    email: str | None,
    store: AcmeStore,
) -> None:
    """
    Tell the server the account's contact is now C{email} (none: no
    contact), RFC 8555 section 7.3.2.
    """
    contact = () if email is None else (f"mailto:{email}",)
    updated = acme.update_registration(account, account.body.update(contact=contact))
    store.keepAccount(updated.to_json(), email)


def updateContact(config: AcmeConfig, store: AcmeStore) -> bool:
    """
    Bring the account's contact in line with C{config}'s email (after a
    reload changed it); whether there was an account to update (a daemon
    that never ordered has none: its first order registers one).
    """
    if store.account() is None:
        return False
    connect(config, store)
    return True


def keyAuthorization(acme: client.ClientV2, token: str) -> str:
    """
    RFC 8555 section 8.1's key authorization of C{token} for the account.
    """
    key = acme.net.key
    assert key is not None, "connect gives the client its key"
    thumbprint = b64encode(key.thumbprint())
    return f"{token}.{thumbprint.decode('ascii')}"


def _choose(
    authorization: messages.AuthorizationResource,
    acme: client.ClientV2,
    preferred: Sequence[str],
) -> Challenge:
    name = authorization.body.identifier.value
    # The library knows no tls-alpn-01: its type is only in the JSON.
    offered = {
        c.chall.to_partial_json().get("type"): c for c in authorization.body.challenges
    }
    for kind in preferred:
        body = offered.get(kind)
        if body is None:
            continue
        token = body.chall.to_partial_json()["token"]
        return Challenge(
            name=name,
            kind=kind,
            token=token,
            keyAuthorization=keyAuthorization(acme, token),
            body=body,
        )
    raise AcmeError(
        f"the server offers {', '.join(sorted(map(str, offered)))} for {name}, none of "
        f"{', '.join(preferred)}"
    )


def placeOrder(
    config: AcmeConfig,
    store: AcmeStore,
    names: Sequence[str],
    key: bytes,
    preferred: Sequence[str],
) -> Pending:
    """
    Order a certificate for C{names} with the new private C{key}, and choose
    a challenge per name among C{preferred} (which the caller narrowed to
    what it can answer).
    """
    acme = connect(config, store)
    csr = crypto_util.make_csr(key, list(names))
    order = acme.new_order(csr)
    chosen = []
    for authorization in order.authorizations:
        if authorization.body.status == messages.STATUS_VALID:
            continue
        chosen.append(_choose(authorization, acme, preferred))
    return Pending(acme=acme, order=order, challenges=tuple(chosen), key=key)


def finish(pending: Pending, deadline: float = ORDER_DEADLINE) -> bytes:
    """
    Tell the server the challenges are answered, wait for it to validate
    them and issue; the full chain (PEM).
    """
    acme = pending.acme
    for challenge in pending.challenges:
        response: challenges.ChallengeResponse
        if challenge.kind == HTTP_01:
            response = challenges.HTTP01Response()
        else:
            assert challenge.kind == TLS_ALPN_01
            # RFC 8555 section 7.5.1: the response is an empty object, as
            # HTTP01Response's is (its key authorization is not sent).
            response = challenges.HTTP01Response()
        acme.answer_challenge(challenge.body, response)
    until = datetime.datetime.now() + datetime.timedelta(seconds=deadline)
    order = acme.poll_and_finalize(pending.order, until)
    if order.fullchain_pem is None:
        raise AcmeError("the server issued no certificate")
    return order.fullchain_pem.encode("ascii")


def renewalTime(
    config: AcmeConfig, store: AcmeStore, chain: bytes
) -> datetime.datetime | None:
    """
    When the server's ARI (renewalInfo) suggests renewing the certificate,
    or C{None} when it offers none.
    """
    acme = connect(config, store)
    suggested, _ = acme.renewal_time(chain)
    return suggested
