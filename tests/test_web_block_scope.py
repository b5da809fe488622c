"""Who a block applies to, from the web pages and the API. A user's Block button blocks
a sender for that user's own aliases (enforced by the milter), never for everyone; a
server-wide rule is an admin's choice, and never for a domain aliasd serves, where users
keep their mailboxes, or a big provider of autoblock_exempt_domains. Nobody blocks the
domains aliasd serves or their own mailbox domain even for themselves (spam forges such
senders all the time). CSV cells never start a spreadsheet formula."""

from __future__ import annotations

import html

from sqlalchemy import select

from aliasd.core import aliases as core
from aliasd.core.block_decision import Sender, blocked_for, load_blocklist
from aliasd.models import BlockRule, SenderBlock
from tests.harness.webapp import login, page_token
from tests.test_blocklist_web import deliver, web  # noqa: F401 - the fixture
from tests.test_web_api import auth, new_token


def _block(client, site_url: str, domain: str, **extra) -> str:
    token = page_token(client, site_url)
    return client.post(site_url + "/block", data={"domain": domain, "csrf_token": token, **extra},
                       follow_redirects=True).get_data(as_text=True)


def test_nobody_blocks_served_or_own_mailbox_domains(web):  # noqa: F811
    app, ids, table, db = web
    for sender in ("forged@bob.example", "forged@sub.alice.example", "x@mailbox.example",
                   "x@gmail.com"):
        deliver(db, "shop.example@alice.example", sender, spam=True)
    alice = app.test_client()
    login(alice, "alice")
    site_url = f"/reports/site/{ids['alice']}/shop.example"
    # the page offers no Block for them, says why, and suggests none of them
    page = html.unescape(alice.get(site_url).get_data(as_text=True))
    for domain in ("bob.example", "sub.alice.example"):
        cell = _sender_cell(page, domain)
        assert "no: a domain this server serves" in cell and "<button" not in cell, domain
    cell = _sender_cell(page, "mailbox.example")
    assert "no: your mailbox domain" in cell and "<button" not in cell
    assert "Block sender domain gmail.com" in page
    suggested = page.split('id="block-suggestions"', 1)[1].split("</ul>", 1)[0] \
        if 'id="block-suggestions"' in page else ""
    assert not any(d in suggested for d in ("bob.example", "alice.example", "mailbox.example"))
    for domain in ("bob.example", "sub.alice.example", "mailbox.example"):
        page = _block(alice, site_url, domain)
        assert "blocking it would refuse your own mail" in page, domain
    admin = app.test_client()
    login(admin, "root")
    for domain in ("bob.example", "mailbox.example"):
        assert "would refuse their own mail" in _block(admin, site_url, domain, scope="server")
    page = _block(admin, site_url, "gmail.com", scope="server")
    assert "autoblock_exempt_domains" in page
    with db.session() as s:
        assert s.scalars(select(BlockRule.value)).all() == []
        assert s.scalars(select(SenderBlock.sender)).all() == []
    # gmail.com is alice's to block for herself, and a real spam source is one click away
    assert "Blocked gmail.com for all your aliases." in _block(alice, site_url, "gmail.com")
    assert "Blocked massnews.gr for all your aliases." in _block(alice, site_url, "massnews.gr")
    assert "Blocked massnews.gr for everyone" in _block(admin, site_url, "massnews.gr",
                                                         scope="server")
    with db.session() as s:
        assert s.scalars(select(BlockRule.value)).all() == ["massnews.gr"]
        assert sorted(s.scalars(select(SenderBlock.sender))) == ["gmail.com", "massnews.gr"]
    assert "massnews" in table.read_text() and "gmail" not in table.read_text()


def test_bobs_block_of_gmail_from_the_report_is_bobs_alone(web):  # noqa: F811
    app, ids, table, db = web
    deliver(db, "secret.example@bob.example", "spammer@gmail.com", spam=True)
    bob = app.test_client()
    login(bob, "bob")
    page = _block(bob, f"/reports/site/{ids['bob']}/secret.example", "gmail.com", scope="server")
    assert "Blocked gmail.com for all your aliases." in page
    with db.session() as s:
        assert s.scalar(select(BlockRule)) is None
        blocklist = load_blocklist(s)
        alice_alias = core.get_alias(s, "shop.example@alice.example")
        bob_alias = core.get_alias(s, "secret.example@bob.example")
    gmail = Sender.of_message("someone@gmail.com", [("From", "Someone <someone@gmail.com>")])
    assert blocked_for(blocklist, gmail) is None  # what lookupd's sender_access asks
    assert blocked_for(blocklist, gmail, owner_id=alice_alias.owner_id, alias_id=alice_alias.id) is None
    block = blocked_for(blocklist, gmail, owner_id=bob_alias.owner_id, alias_id=bob_alias.id)
    assert block is not None and (block.scope, block.matched) == ("user", "gmail.com")
    # the report says so, to bob only
    data = bob.get("/reports/export.json?period=all").get_json()
    assert data["rows"][0]["blocked_sender_domains"] == 1
    alice = app.test_client()
    login(alice, "alice")
    rows = alice.get("/reports/export.json?period=all").get_json()["rows"]
    assert all(r["blocked_sender_domains"] == 0 for r in rows)


def test_alias_page_blocks_a_sender_for_the_alias_or_all_aliases(web):  # noqa: F811
    app, ids, _table, db = web
    with db.session() as s:
        shop = core.get_alias(s, "shop.example@alice.example").id
        forum = core.get_alias(s, "forum.example@alice.example").id
        secret = core.get_alias(s, "secret.example@bob.example").id
    alice = app.test_client()
    login(alice, "alice")
    url = f"/aliases/{shop}"
    token = page_token(alice, url)
    page = alice.post(url + "/blocks", data={"sender": "Promo@MassNews.GR", "scope": "alias",
                                             "csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert "Blocked promo@massnews.gr for shop.example@alice.example." in page
    page = alice.post(url + "/blocks", data={"sender": "@spam.example", "scope": "user",
                                             "csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert "Blocked spam.example for all aliases of alice." in page
    assert 'id="sender-blocks"' in page and "promo@massnews.gr" in page
    bad = alice.post(url + "/blocks", data={"sender": "not a sender!", "csrf_token": token},
                     follow_redirects=True).get_data(as_text=True)
    assert "is not a sender domain or address" in bad
    # the forum alias shows the user-wide block only
    forum_page = alice.get(f"/aliases/{forum}").get_data(as_text=True)
    assert "spam.example" in forum_page and "promo@massnews.gr" not in forum_page
    with db.session() as s:
        blocks = {b.sender: b for b in s.scalars(select(SenderBlock))}
        blocklist = load_blocklist(s)
    assert blocks["promo@massnews.gr"].alias_id == shop and blocks["spam.example"].alias_id is None
    promo = Sender.of_message("promo@massnews.gr", [])
    assert blocked_for(blocklist, promo, owner_id=ids["alice"], alias_id=shop).scope == "alias"
    assert blocked_for(blocklist, promo, owner_id=ids["alice"], alias_id=forum) is None
    news = Sender.of_message("news@massnews.gr", [])
    assert blocked_for(blocklist, news, owner_id=ids["alice"], alias_id=shop) is None
    # bob can neither see alice's alias nor remove her blocks; CSRF is required
    bob = app.test_client()
    login(bob, "bob")
    bob_token = page_token(bob, f"/aliases/{secret}")
    assert bob.post(url + "/blocks", data={"sender": "x.example", "csrf_token": bob_token}).status_code == 404
    remove = f"{url}/blocks/{blocks['spam.example'].id}/remove"
    assert bob.post(f"/aliases/{secret}/blocks/{blocks['spam.example'].id}/remove",
                    data={"csrf_token": bob_token}).status_code == 404
    assert alice.post(remove, data={}).status_code == 400
    page = alice.post(remove, data={"csrf_token": token}, follow_redirects=True).get_data(as_text=True)
    assert "Unblocked spam.example." in page
    with db.session() as s:
        assert s.scalars(select(SenderBlock.sender)).all() == ["promo@massnews.gr"]


def test_api_sender_blocks_are_the_callers_own(web):  # noqa: F811
    app, ids, _table, db = web
    with db.session() as s:
        shop = core.get_alias(s, "shop.example@alice.example").id
        secret = core.get_alias(s, "secret.example@bob.example").id
    alice, bob = auth(new_token(app, "alice")), auth(new_token(app, "bob"))
    api = app.test_client()
    made = api.post("/api/blocks", json={"sender": "Spam.Example."}, headers=alice)
    assert made.status_code == 201
    user_block = made.get_json()
    assert (user_block["sender"], user_block["scope"], user_block["alias_id"]) == \
        ("spam.example", "user", None)
    made = api.post(f"/api/aliases/{shop}/blocks", json={"sender": "x@news.example"}, headers=alice)
    assert made.status_code == 201 and made.get_json()["scope"] == "alias"
    assert api.post(f"/api/aliases/{shop}/blocks", json={"sender": "y.example", "scope": "server"},
                    headers=alice).status_code == 422
    assert api.post("/api/blocks", json={"sender": "alice.example"}, headers=alice).status_code == 422
    assert api.post("/api/blocks", json={}, headers=alice).status_code == 422
    assert api.post("/api/blocks", json={"sender": 5}, headers=alice).status_code == 400
    listed = api.get("/api/blocks", headers=alice).get_json()["blocks"]
    assert sorted(b["sender"] for b in listed) == ["spam.example", "x@news.example"]
    applies = api.get(f"/api/aliases/{shop}/blocks", headers=alice).get_json()["blocks"]
    assert len(applies) == 2
    # bob sees none of it and can change none of it
    assert api.get("/api/blocks", headers=bob).get_json()["blocks"] == []
    assert api.get(f"/api/aliases/{shop}/blocks", headers=bob).status_code == 404
    assert api.post(f"/api/aliases/{shop}/blocks", json={"sender": "z.example"},
                    headers=bob).status_code == 404
    assert api.delete(f"/api/blocks/{user_block['id']}", headers=bob).status_code == 404
    assert api.post(f"/api/aliases/{secret}/blocks", json={"sender": "gmail.com", "scope": "user"},
                    headers=bob).status_code == 201
    assert api.delete(f"/api/blocks/{user_block['id']}", headers=alice).get_json() == \
        {"deleted": user_block["id"], "sender": "spam.example"}
    assert api.delete(f"/api/blocks/{user_block['id']}", headers=alice).status_code == 404
    with db.session() as s:
        assert s.scalar(select(BlockRule)) is None  # none of this reaches Postfix


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
    # cells with nothing to say stay empty: no lone quote where a site has no block reason
    assert "'" not in cells and "" in cells


def _sender_cell(page: str, domain: str) -> str:
    """The "Blocked" cell of ``domain``'s row in the site page's Senders table."""
    table = page[page.index('<table id="senders">'):]
    row = table[table.index(f'<th scope="row">{domain}</th>'):]
    return html.unescape(row[:row.index("</tr>")])


def test_for_everyone_is_offered_only_where_a_server_wide_rule_would_be_made(web):  # noqa: F811
    app, ids, _table, db = web
    for sender in ("x@gmail.com", "forged@bob.example", "x@mail.gmail.com"):
        deliver(db, "shop.example@alice.example", sender, spam=True)
    admin = app.test_client()
    login(admin, "root")
    page = admin.get(f"/reports/site/{ids['alice']}/shop.example").get_data(as_text=True)
    assert "for everyone</button>" in _sender_cell(page, "massnews.gr")
    for refused in ("gmail.com", "mail.gmail.com"):
        cell = _sender_cell(page, refused)
        assert "for everyone" not in cell, refused
        assert f"Block {refused}</button>" in cell  # alice's own block stays one click away
    # a served domain is nobody's to block, not even alice's for herself
    assert _sender_cell(page, "bob.example").endswith("<td>no: a domain this server serves</td>")


def test_one_spam_from_a_large_mail_provider_is_no_block_suggestion(web):  # noqa: F811
    app, ids, _table, db = web
    deliver(db, "shop.example@alice.example", "someone@gmail.com", spam=True)
    alice = app.test_client()
    login(alice, "alice")
    page = alice.get(f"/reports/site/{ids['alice']}/shop.example").get_data(as_text=True)
    suggestions = page[page.index('id="block-suggestions"'):page.index("</ul>", page.index(
        'id="block-suggestions"'))]
    assert "massnews.gr" in suggestions and "gmail.com" not in suggestions
    # typing the block by hand is still alice's choice
    assert "Blocked gmail.com for all your aliases." in _block(
        alice, f"/reports/site/{ids['alice']}/shop.example", "gmail.com")


def test_a_sender_of_another_site_says_so_where_it_cannot_be_blocked(web):  # noqa: F811
    app, ids, _table, db = web
    deliver(db, "shop.example@alice.example", "someone@gmail.com", spam=True)
    alice = app.test_client()
    login(alice, "alice")
    forum = f"/reports/site/{ids['alice']}/forum.example"
    alice.post(forum + "/senders", data={"domain": "gmail.com",
                                         "csrf_token": page_token(alice, forum)})
    shop = f"/reports/site/{ids['alice']}/shop.example"
    page = alice.get(shop).get_data(as_text=True)
    assert "no: a known sender of another of your sites (forum.example)" in _sender_cell(
        page, "gmail.com")
    admin = app.test_client()
    login(admin, "root")
    page = admin.get(shop).get_data(as_text=True)
    assert "no: a known sender of another of alice's sites (forum.example)" in _sender_cell(
        page, "gmail.com")
    assert "no: a sender of this site" in _sender_cell(page, "shop.example")
