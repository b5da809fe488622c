"""Report actions and exports with other users in mind. A block is server-wide:
from the report page a user may block a spam source, but not a domain aliasd itself
serves or a domain where users keep their mailboxes (spam forges such senders all the
time; auto-block spares them for the same reason). Admins may. CSV cells never start a
spreadsheet formula."""

from __future__ import annotations

from sqlalchemy import select

from aliasd.models import BlockRule
from tests.harness.webapp import login, page_token
from tests.test_blocklist_web import deliver, web  # noqa: F401 - the fixture


def test_users_cannot_block_served_or_mailbox_domains(web):  # noqa: F811
    app, ids, table, db = web
    for sender in ("forged@bob.example", "forged@sub.alice.example", "x@mailbox.example"):
        deliver(db, "shop.example@alice.example", sender, spam=True)
    alice = app.test_client()
    login(alice, "alice")
    site_url = f"/reports/site/{ids['alice']}/shop.example"
    token = page_token(alice, site_url)
    for domain in ("bob.example", "sub.alice.example", "mailbox.example"):
        page = alice.post(site_url + "/block", data={"domain": domain, "csrf_token": token},
                          follow_redirects=True).get_data(as_text=True)
        assert "ask an administrator" in page, domain
    with db.session() as s:
        assert s.scalars(select(BlockRule.value)).all() == []
    # a real spam source is still one click away
    alice.post(site_url + "/block", data={"domain": "massnews.gr", "csrf_token": token})
    # an admin decides for everyone
    admin = app.test_client()
    login(admin, "root")
    token = page_token(admin, site_url)
    admin.post(site_url + "/block", data={"domain": "bob.example", "csrf_token": token})
    with db.session() as s:
        assert sorted(s.scalars(select(BlockRule.value))) == ["bob.example", "massnews.gr"]


def test_csv_export_cells_never_start_a_formula(database, settings):
    """Sites fall back to the address for aliases without one, and LDAP user names are
    anyone's choice: a cell starting with = + - @ is prefixed with ' in the CSV."""
    import csv
    import io

    from aliasd.core import aliases as core
    from tests.harness.webapp import add_user, make_app

    add_user(database, "=1+1", domain="formula.example")
    add_user(database, "root", admin=True)
    with database.session() as s:
        user = core.get_user(s, "=1+1")
        for local in ("=2+3", "-1+2", "+sum"):
            core.create_alias(s, f"{local}@formula.example", user)
    for local in ("=2+3", "-1+2", "+sum"):
        deliver(database, f"{local}@formula.example", "x@spam.example", spam=True)
    app = make_app(settings)
    admin = app.test_client()
    login(admin, "root")
    text = admin.get("/reports/export.csv?period=all").get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert len(rows) == 3
    cells = [cell for row in rows for cell in row]
    assert "'=1+1" in cells and "'=2+3@formula.example" in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], cells
