"""Brute-force limit on logins: per account and per client address, on the API's token endpoint,
the login page and the admin's; 429 with Retry-After; the lock ends after the cool-off."""
from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.db.models import F
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

ATTACKER, OFFICE = "203.0.113.7", "198.51.100.20"


@pytest.fixture
def accounts(make_user, settings):
    settings.AXES_FAILURE_LIMIT = 10
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    return make_user("ann"), make_user("bob")


def token_request(username: str, password: str, address: str = ATTACKER, **headers):
    return APIClient().post("/api/auth/token/", {"username": username, "password": password}, format="json",
                            REMOTE_ADDR=address, **headers)


def page_login(client, username: str, password: str, address: str = ATTACKER):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def assert_locked(response, now_seconds: int = 900) -> int:
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert now_seconds - 30 < retry_after <= now_seconds  # the lock ends a cool-off after the 10th failure
    return retry_after


def test_api_30_wrong_passwords_then_the_right_one_is_429_with_retry_after(accounts):
    for _ in range(30):
        assert token_request("ann", "wrong").status_code in (400, 429)

    response = token_request("ann", "pw-ann")

    assert_locked(response)
    assert response.json() == {
        "detail": "Too many failed logins for this account or from this address. Try again in 15 minutes."}
    # Only the failures before the lock counted: a lock's end does not move while it is hammered.
    assert sum(AccessAttempt.objects.values_list("failures_since_start", flat=True)) == 10


def test_login_page_30_wrong_passwords_then_the_right_one_is_a_readable_429(accounts, client):
    for _ in range(30):
        assert page_login(client, "ann", "wrong").status_code in (200, 429)

    response = page_login(client, "ann", "pw-ann")

    assert_locked(response)
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Too many failed logins for this account or from this address. Try again in 15 minutes." in page
    assert "_auth_user_id" not in client.session  # not logged in


def test_the_admin_login_is_limited_too(accounts, client, django_user_model):
    django_user_model.objects.create_superuser("root", password="pw-root")
    for _ in range(10):
        client.post("/admin/login/", {"username": "root", "password": "wrong"}, REMOTE_ADDR=ATTACKER)
    response = client.post("/admin/login/", {"username": "root", "password": "pw-root"}, REMOTE_ADDR=ATTACKER)
    assert_locked(response)


def test_a_correct_login_before_the_limit_is_not_blocked(accounts, client):
    for _ in range(9):
        assert token_request("ann", "wrong").status_code == 400
    assert token_request("ann", "pw-ann").status_code == 200
    for _ in range(9):
        assert page_login(client, "bob", "wrong", OFFICE).status_code == 200
    assert page_login(client, "bob", "pw-bob", OFFICE).status_code == 302  # logged in, to the home page


def test_the_lock_is_per_account_and_per_address_and_others_are_unaffected(accounts):
    for _ in range(10):
        token_request("ann", "wrong", ATTACKER)
    assert token_request("bob", "pw-bob", OFFICE).status_code == 200  # another account, another address
    assert_locked(token_request("ann", "pw-ann", OFFICE))  # the account is locked from everywhere
    assert_locked(token_request("bob", "pw-bob", ATTACKER))  # and the address for every account


def test_a_success_does_not_reset_the_count(accounts):
    """An attacker who owns one account must not clear their count by logging into it between
    guesses at another."""
    for _ in range(3):
        for _ in range(3):
            token_request("ann", "wrong")
        assert token_request("bob", "pw-bob").status_code == 200
    token_request("ann", "wrong")
    assert_locked(token_request("ann", "wrong"))


def test_the_lock_ends_after_the_cool_off(accounts, client):
    for _ in range(10):
        token_request("ann", "wrong")
    assert_locked(token_request("ann", "pw-ann"))

    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=15, seconds=1))

    assert token_request("ann", "pw-ann").status_code == 200
    assert page_login(client, "ann", "pw-ann").status_code == 302


def test_retry_after_counts_down_to_the_end_of_the_lock(accounts):
    for _ in range(10):
        token_request("ann", "wrong")
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=10))
    assert_locked(token_request("ann", "pw-ann"), now_seconds=300)


def test_forwarded_for_is_ignored_unless_proxies_are_configured(accounts, settings):
    settings.CLETIR_TRUSTED_PROXIES = 0
    for number in range(10):  # a new made-up address each time
        token_request("nobody", "wrong", ATTACKER, HTTP_X_FORWARDED_FOR=f"192.0.2.{number}")
    assert_locked(token_request("bob", "pw-bob", ATTACKER, HTTP_X_FORWARDED_FOR="192.0.2.99"))


def test_behind_a_trusted_proxy_the_address_it_saw_is_the_client(accounts, settings):
    settings.CLETIR_TRUSTED_PROXIES = 1
    proxy = "10.0.0.2"
    for number in range(10):  # what the client writes itself (left of the proxy's entry) is ignored
        token_request("nobody", "wrong", proxy, HTTP_X_FORWARDED_FOR=f"192.0.2.{number}, {ATTACKER}")
    assert_locked(token_request("bob", "pw-bob", proxy, HTTP_X_FORWARDED_FOR=ATTACKER))
    # Another client behind the same proxy is not locked out with the attacker.
    assert token_request("bob", "pw-bob", proxy, HTTP_X_FORWARDED_FOR=OFFICE).status_code == 200


def test_an_overlong_username_is_a_400_not_a_server_error(accounts):
    response = token_request("a" * 151, "wrong")
    assert response.status_code == 400
    assert list(response.json()) == ["username"]
