"""The console's Offers page over HTTP against a real server: a sponsor's offers; adding,
editing and disabling one (the checks of `offer import`, audited); the rule editor's check and
its preview of CALCULATE with the draft rule (the same miles a real CALCULATE gives once the
offer is saved); roles, CSRF, bad input and escaping."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from rewardmiles import limits
from rewardmiles.db.engine import Database
from rewardmiles.db.models import OperatorAuditEntry
from rewardmiles.offers import service as offers
from rewardmiles.vocabulary import OperatorRole
from tests.support import data
from tests.support.console import COOKIE, Console, maxlengths, signed_in, text_of
from tests.support.partner import Partner
from tests.support.server import Server

PAGE = "/console/offers"
CALCULATE = "/checkout/issuance/calculate"
XSS = "<script>alert(1)</script>"
BASE = {"type": "base", "miles": 1, "perDollars": 10}


@pytest.fixture
def admin(server: Server, db: Database) -> Console:
    return signed_in(db, server.base_url, OperatorRole.ADMIN)


@pytest.fixture
def viewer(server: Server, db: Database) -> Console:
    return signed_in(db, server.base_url, OperatorRole.VIEWER)


def _offer_form(sponsor: str, code: str, rule: Any, **fields: str) -> dict[str, str]:
    text = rule if isinstance(rule, str) else json.dumps(rule)
    return {"sponsor": sponsor, "code": code, "rule": text, "description": "", **fields}


def _saved(db: Database, sponsor: str, code: str) -> offers.OfferView | None:
    with db.reader() as session:
        return offers.offer(session, sponsor, code)


def _audit(db: Database, entity_id: str) -> list[str]:
    with db.reader() as session:
        return list(
            session.scalars(
                select(OperatorAuditEntry.action)
                .where(OperatorAuditEntry.entity_id == entity_id)
                .order_by(OperatorAuditEntry.id)
            )
        )


def _basket_of(page_html: str) -> str:
    found = re.search(r'<textarea id="basket"[^>]*>([^<]*)</textarea>', page_html)
    assert found, page_html
    return found.group(1).replace("&#34;", '"').replace("&quot;", '"')


def _total_of(fragment: str) -> int:
    found = re.search(r'id="preview-total">([0-9,]+)<', fragment)
    assert found, fragment
    return int(found.group(1).replace(",", ""))


def test_the_page_lists_a_sponsors_offers_for_any_role(
    server: Server, db: Database, viewer: Console
) -> None:
    sponsor = data.new_sponsor(db)
    with db.unit_of_work() as session:
        offers.put_offer(
            session,
            sponsor,
            "BASE",
            description="1 mile per $10",
            rule=BASE,
            valid_from=None,
            valid_to=None,
            locations=["0037"],
            offer_id="501",
            now=data.now(),
            replace=False,
        )
    page = viewer.get(PAGE, params={"sponsor": sponsor})
    assert page.status_code == 200
    text = text_of(page.text)
    assert "1 mile per $10" in text
    assert "STANDARD" in text
    assert "0037" in text
    assert "&#34;perDollars&#34;: &#34;10&#34;" in page.text or "perDollars" in text
    for action in ("New offer", ">Disable<", ">Edit<"):
        assert action not in page.text
    assert viewer.get(PAGE).status_code == 200  # no sponsor chosen yet
    assert viewer.get(PAGE + "/edit", params={"sponsor": sponsor}).status_code == 403


def test_without_a_session_the_page_sends_the_browser_to_sign_in(server: Server) -> None:
    answer = httpx.get(server.base_url + PAGE, timeout=30)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")


def test_an_admin_adds_edits_and_disables_an_offer(
    server: Server, db: Database, admin: Console
) -> None:
    sponsor = data.new_sponsor(db)
    form = admin.get(PAGE + "/edit", params={"sponsor": sponsor})
    assert form.status_code == 200
    for label in ("Rule (JSON)", "Sample basket (JSON)"):
        assert f">{label}</label>" in form.text
    added = admin.post(
        PAGE + "/save",
        _offer_form(sponsor, "BASE", BASE, description="Base", locations="0037, 0040"),
    )
    assert added.status_code == 303
    assert "Offer+BASE+added" in added.headers["location"]
    saved = _saved(db, sponsor, "BASE")
    assert saved is not None
    assert saved.active
    assert saved.locations == ["0037", "0040"]
    assert saved.rule == {
        "type": "base",
        "miles": 1,
        "perDollars": "10",
        "capMiles": None,
        "excludeItems": [],
        "excludeCategories": [],
        "excludeDepartments": [],
    }
    edit = admin.get(PAGE + "/edit", params={"sponsor": sponsor, "code": "BASE"})
    assert edit.status_code == 200
    assert "readonly" in edit.text
    assert "0037, 0040" in edit.text
    changed = admin.post(
        PAGE + "/save",
        _offer_form(sponsor, "BASE", {**BASE, "miles": 2}, editing="1", validTo="2099-12-31"),
    )
    assert changed.status_code == 303
    again = _saved(db, sponsor, "BASE")
    assert again is not None
    assert again.rule is not None
    assert again.rule["miles"] == 2
    assert again.valid_to is not None
    disabled = admin.post(PAGE + "/disable", {"sponsor": sponsor, "code": "BASE"})
    assert disabled.status_code == 303
    gone = _saved(db, sponsor, "BASE")
    assert gone is not None
    assert not gone.active
    assert _audit(db, f"{sponsor}/BASE") == ["offer.put", "offer.put", "offer.disable"]
    twice = admin.post(PAGE + "/disable", {"sponsor": sponsor, "code": "BASE"})
    assert twice.status_code == 404


def test_saving_refuses_what_offer_import_refuses_beside_the_field(
    server: Server, db: Database, admin: Console
) -> None:
    sponsor = data.new_sponsor(db)
    bad_rule = admin.post(PAGE + "/save", _offer_form(sponsor, "BASE", {"type": "base"}))
    assert bad_rule.status_code == 422
    assert "invalid rule" in text_of(bad_rule.text)
    assert "<code>miles</code>" in bad_rule.text
    assert 'aria-invalid="true"' in bad_rule.text
    not_json = admin.post(PAGE + "/save", _offer_form(sponsor, "BASE", "{nope"))
    assert not_json.status_code == 400
    assert "The rule is not valid JSON" in text_of(not_json.text)
    dates = admin.post(
        PAGE + "/save",
        _offer_form(sponsor, "BASE", BASE, validFrom="2030-02-01", validTo="2030-01-01"),
    )
    assert dates.status_code == 422
    assert "validFrom is after validTo" in text_of(dates.text)
    bad_day = admin.post(PAGE + "/save", _offer_form(sponsor, "BASE", BASE, validFrom="soon"))
    assert bad_day.status_code == 400
    assert "YYYY-MM-DD" in text_of(bad_day.text)
    bad_code = admin.post(PAGE + "/save", _offer_form(sponsor, "lower", BASE))
    assert bad_code.status_code == 422
    assert "uppercase" in text_of(bad_code.text)
    no_code = admin.post(PAGE + "/save", _offer_form(sponsor, "", BASE))
    assert no_code.status_code == 400
    long_description = admin.post(
        PAGE + "/save", _offer_form(sponsor, "BASE", BASE, description="d" * 1000)
    )
    assert long_description.status_code == 400
    unknown = admin.post(PAGE + "/save", _offer_form("NOSUCH7", "BASE", BASE))
    assert unknown.status_code == 404
    assert _saved(db, sponsor, "BASE") is None
    assert _audit(db, f"{sponsor}/BASE") == []


def test_the_rule_check_names_the_member_at_fault(
    server: Server, db: Database, viewer: Console
) -> None:
    valid = viewer.post(PAGE + "/validate", {"rule": json.dumps(BASE)})
    assert valid.status_code == 200
    assert "The rule is valid" in text_of(valid.text)
    assert 'data-state="ok"' in valid.text
    missing = viewer.post(PAGE + "/validate", {"rule": '{"type": "base", "miles": 1}'})
    assert missing.status_code == 200
    assert 'data-state="bad"' in missing.text
    assert "<code>perDollars</code>" in missing.text
    wrong = viewer.post(PAGE + "/validate", {"rule": '{"type": "item", "items": ["a"]}'})
    assert 'data-state="bad"' in wrong.text
    assert "milesPerUnit" in text_of(wrong.text)
    broken = viewer.post(PAGE + "/validate", {"rule": '{"type": '})
    assert 'data-state="bad"' in broken.text
    assert "not valid JSON" in text_of(broken.text)
    empty = viewer.post(PAGE + "/validate", {"rule": ""})
    assert empty.status_code == 200
    assert "No rule" in text_of(empty.text)
    # htmx and the page's script send the token as a header instead of a field
    headed = httpx.post(
        server.base_url + PAGE + "/validate",
        data={"rule": json.dumps(BASE)},
        cookies={COOKIE: viewer.cookie},
        headers={"X-CSRF-Token": viewer.csrf, "Origin": server.base_url},
        timeout=30,
    )
    assert headed.status_code == 200
    assert viewer.post(PAGE + "/validate", {"rule": "{}"}, csrf=None).status_code == 403
    assert viewer.post(PAGE + "/validate", {"rule": "{}"}, csrf="nope").status_code == 403


def test_the_preview_gives_what_calculate_gives_once_the_offer_is_saved(
    server: Server, db: Database, admin: Console
) -> None:
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    admin.post(PAGE + "/save", _offer_form(sponsor, "BASE", BASE, description="Base"))
    form = admin.get(PAGE + "/edit", params={"sponsor": sponsor})
    basket = _basket_of(form.text)
    rule = {"type": "item", "categories": ["COFFEE"], "milesPerUnit": 7}
    preview = admin.post(
        PAGE + "/preview",
        {"sponsor": sponsor, "code": "COFFEE", "rule": json.dumps(rule), "basket": basket},
    )
    assert preview.status_code == 200
    text = text_of(preview.text)
    assert "COFFEE (this offer)" in text
    assert "BASE" in text
    total = _total_of(preview.text)
    assert total == 2 * 7 + 6  # 2 coffees at 7 each, and $65.50 at 1 per $10
    assert _saved(db, sponsor, "COFFEE") is None  # nothing saved
    saved = admin.post(PAGE + "/save", _offer_form(sponsor, "COFFEE", rule))
    assert saved.status_code == 303
    answer = partner.call(CALCULATE, {**json.loads(basket), "sponsorCode": sponsor}, key=None)
    assert answer.status_code == 200, answer.text
    assert answer.json()["totalMiles"] == total
    lines = {line["issuanceOfferCode"]: line["milesAmount"] for line in answer.json()["issuances"]}
    assert lines == {"BASE": 6, "COFFEE": 14}
    # the draft replaces the saved offer of its code
    doubled = admin.post(
        PAGE + "/preview",
        {
            "sponsor": sponsor,
            "code": "COFFEE",
            "rule": json.dumps({**rule, "milesPerUnit": 100}),
            "basket": basket,
        },
    )
    assert _total_of(doubled.text) == 200 + 6
    partner.close()


def test_the_preview_names_what_is_wrong_with_the_rule_or_the_basket(
    server: Server, db: Database, viewer: Console
) -> None:
    sponsor = data.new_sponsor(db)
    good = json.dumps(BASE)

    def preview(rule: str, basket: str) -> httpx.Response:
        return viewer.post(
            PAGE + "/preview", {"sponsor": sponsor, "code": "X1", "rule": rule, "basket": basket}
        )

    sample = json.loads(_basket_of_default(viewer, sponsor, db))
    bad_rule = preview('{"type": "base"}', json.dumps(sample))
    assert 'data-state="bad"' in bad_rule.text
    assert "Rule (JSON)" in bad_rule.text
    unbalanced = preview(good, json.dumps({**sample, "basketPreTaxAmount": 1.0}))
    assert 'data-state="bad"' in unbalanced.text
    assert "items add up to" in text_of(unbalanced.text)
    not_json = preview(good, "[1, 2")
    assert 'data-state="bad"' in not_json.text
    assert "The sample basket is not valid JSON" in text_of(not_json.text)
    late = preview(good, json.dumps({**sample, "checkoutDateTime": "2099-01-01T00:00:00Z"}))
    assert 'data-state="bad"' in late.text
    assert "future" in text_of(late.text)
    nowhere = viewer.post(
        PAGE + "/preview", {"sponsor": "NOSUCH6", "code": "X1", "rule": good, "basket": "{}"}
    )
    assert 'data-state="bad"' in nowhere.text
    empty = preview("", json.dumps(sample))  # no rule: nothing to preview
    assert empty.status_code == 200
    assert "Write a rule" in empty.text
    assert "<table" not in empty.text


def _basket_of_default(console: Console, sponsor: str, db: Database) -> str:
    admin = signed_in(db, console.base_url, OperatorRole.ADMIN)
    return _basket_of(admin.get(PAGE + "/edit", params={"sponsor": sponsor}).text)


def test_a_viewer_cannot_save_or_disable(server: Server, db: Database, viewer: Console) -> None:
    sponsor = data.new_sponsor(db)
    saved = viewer.post(PAGE + "/save", _offer_form(sponsor, "BASE", BASE))
    assert saved.status_code == 403
    assert "ADMIN_FORBIDDEN" in saved.text
    assert _saved(db, sponsor, "BASE") is None
    disabled = viewer.post(PAGE + "/disable", {"sponsor": sponsor, "code": "STANDARD"})
    assert disabled.status_code == 403
    standard = _saved(db, sponsor, "STANDARD")
    assert standard is not None
    assert standard.active


@pytest.mark.parametrize("csrf", [None, "wrong-token"])
def test_a_post_without_the_sessions_token_is_refused(
    server: Server, db: Database, admin: Console, csrf: str | None
) -> None:
    sponsor = data.new_sponsor(db)
    saved = admin.post(PAGE + "/save", _offer_form(sponsor, "BASE", BASE), csrf=csrf)
    assert saved.status_code == 403
    assert "CSRF_REJECTED" in saved.text
    assert _saved(db, sponsor, "BASE") is None
    disabled = admin.post(PAGE + "/disable", {"sponsor": sponsor, "code": "STANDARD"}, csrf=csrf)
    assert disabled.status_code == 403
    standard = _saved(db, sponsor, "STANDARD")
    assert standard is not None
    assert standard.active


def test_bad_queries_are_4xx_pages(server: Server, db: Database, admin: Console) -> None:
    assert admin.get(PAGE, params={"sponsor": "bad code"}).status_code == 400
    assert admin.get(PAGE, params={"sponsor": "NOSUCH5"}).status_code == 404
    sponsor = data.new_sponsor(db)
    assert (
        admin.get(PAGE + "/edit", params={"sponsor": sponsor, "code": "lower"}).status_code == 400
    )
    assert admin.get(PAGE + "/edit", params={"sponsor": sponsor, "code": "NONE"}).status_code == 404
    assert admin.get(PAGE + "/edit", params={"sponsor": "NOSUCH5"}).status_code == 404
    assert admin.get(PAGE + "/edit").status_code == 400
    huge = admin.post(PAGE + "/validate", {"rule": "x" * (70 * 1024)})
    assert huge.status_code == 413


def test_names_and_descriptions_like_scripts_show_as_text(
    server: Server, db: Database, admin: Console
) -> None:
    code = "X" + secrets.token_hex(3).upper()
    assert admin.post("/console/partners/sponsors", {"code": code, "name": XSS}).status_code == 303
    saved = admin.post(PAGE + "/save", _offer_form(code, "BASE", BASE, description=XSS))
    assert saved.status_code == 303
    for page in (
        admin.get(PAGE, params={"sponsor": code}),
        admin.get(PAGE + "/edit", params={"sponsor": code, "code": "BASE"}),
    ):
        assert page.status_code == 200
        assert XSS not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    check = admin.post(PAGE + "/validate", {"rule": json.dumps({**BASE, XSS: 1})})
    assert 'data-state="bad"' in check.text
    assert XSS not in check.text
    assert "&lt;script&gt;" in check.text


def test_the_form_takes_as_much_as_the_server_does(
    server: Server, db: Database, admin: Console
) -> None:
    """Each field's maxlength is the limit the server checks: no valid value is cut short."""
    form = admin.get(PAGE + "/edit", params={"sponsor": data.new_sponsor(db)})
    assert form.status_code == 200
    assert maxlengths(form.text) == {
        "code": limits.offer_code_chars_max,
        "offer-id": limits.offer_id_chars_max,
        "description": limits.offer_description_chars_max,
    }


def test_only_the_consoles_own_redirect_puts_words_in_the_status_line(
    server: Server, db: Database, admin: Console, viewer: Console
) -> None:
    """What an action did is shown on the page it leads to; a link made elsewhere with a
    message of its own (or a signature of another session) shows nothing."""
    sponsor = data.new_sponsor(db)
    added = admin.post(PAGE + "/save", _offer_form(sponsor, "SAID", BASE, description="Said"))
    assert added.status_code == 303
    shown = admin.get(added.headers["location"])
    assert '<p class="done" role="status">Offer SAID added.</p>' in shown.text
    query = dict(httpx.URL(added.headers["location"]).params)
    forged = {**query, "done": "Your session expired: call +1 555 0100 with your password."}
    for params in (forged, {"sponsor": sponsor, "done": forged["done"]}):
        page = admin.get(PAGE, params=params)
        assert page.status_code == 200
        assert "call +1 555" not in page.text
        assert 'class="done"' not in page.text
    other = viewer.get(PAGE, params=query)  # another session's signature
    assert other.status_code == 200
    assert 'class="done"' not in other.text
