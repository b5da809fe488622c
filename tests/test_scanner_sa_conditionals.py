"""Rule files are read inside the if/ifplugin blocks SpamAssassin itself would read
(Debian's 4.0.1 with its default plugins, local tests only): a rule defined with and
without a plugin keeps SpamAssassin's definition whatever the order; a block for a
plugin Debian does not load, or for another version, is left out; an expression that
cannot be read skips its block with a warning naming file and line, and the rest loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from aliasd.scanner import filerules
from aliasd.scanner.message import decode_header_value, parse_message
from aliasd.scanner.rulefile import HeaderView, RuleSet
from aliasd.scanner.sa_conditionals import evaluate

SA_RULES = Path("/usr/share/spamassassin")  # Debian's spamassassin package (scripts/install-deps)


def loaded(text: str) -> RuleSet:
    rules = RuleSet()
    rules.load_text(text, "local.cf")
    return rules


def matches(rules: RuleSet, body: str) -> set[str]:
    pm = parse_message(f"From: a@b.example\nSubject: hi\n\n{body}\n".encode())
    return set(rules.compile().match(filerules.texts(pm), HeaderView(pm.msg, decode_header_value)))


@pytest.mark.parametrize("fallback_first", [True, False])
def test_a_plugins_fallback_gives_way_to_its_real_rule_in_either_order(fallback_first):
    fallback = "if !plugin(Mail::SpamAssassin::Plugin::ReplaceTags)\n  body WORD /never/\nendif\n"
    real = "ifplugin Mail::SpamAssassin::Plugin::ReplaceTags\n  body WORD /bitcoin/i\nendif\n"
    rules = loaded(fallback + real if fallback_first else real + fallback)
    assert "WORD" in matches(rules, "Buy Bitcoin now")
    assert rules.report.warnings == []


def test_blocks_for_plugins_debian_does_not_load_are_left_out_and_else_is_followed():
    rules = loaded("""
ifplugin Mail::SpamAssassin::Plugin::TextCat
  body   NOT_LOADED  /money/
else
  body   IN_ELSE     /money/
endif
ifplugin Mail::SpamAssassin::Plugin::HTMLEval
  body   LOADED      /money/
endif
""")
    assert matches(rules, "send money") == {"IN_ELSE", "LOADED"}
    assert rules.report.unread == 1  # and the startup report says so
    assert "1 lines in if/ifplugin blocks for other SpamAssassin versions or plugins not read" \
        in rules.report.summary()


@pytest.mark.parametrize(("expression", "truth"), [
    ("(version >= 3.004002)", True),
    ("(version >= 4.000000)", True),
    ("(version < 4.000000)", False),
    ("!((version >= 3.004000))", False),
    ("can(Mail::SpamAssassin::Conf::feature_bug6558_free)", True),
    ("!can(Mail::SpamAssassin::Conf::compat_welcomelist_blocklist)", True),
    ("can(Mail::SpamAssassin::Plugin::BodyEval::has_check_body_length)", True),
    ("can(Mail::SpamAssassin::Plugin::ASN::has_check_asn)", False),  # ASN is not loaded
    ("!plugin(Mail::SpamAssassin::Plugin::DKIM)", False),
    ("!(!plugin(Mail::SpamAssassin::Plugin::DKIM))", True),
    ("plugin(Mail::SpamAssassin::Plugin::Dmarc)", True),  # renamed DMARC, as Parser.pm reads it
    ("plugin(Mail::SpamAssassin::Plugin::DKIM) && version >= 5", False),
    ("plugin(Mail::SpamAssassin::Plugin::TextCat) || local_tests_only", True),
])
def test_if_expressions_are_what_spamassassin_401_finds(expression, truth):
    assert evaluate(expression) is truth


def test_nested_blocks_are_read_only_when_every_enclosing_one_is():
    rules = loaded("""
if (version < 4.000000)
  ifplugin Mail::SpamAssassin::Plugin::HTMLEval
    body   OLD_ONLY   /money/
  else
    body   OLD_ELSE   /money/
  endif
endif
if (version >= 3.004000)
  if can(Mail::SpamAssassin::Conf::feature_capture_rules)
    body   NEW_BOTH   /money/
  endif
endif
""")
    assert matches(rules, "money") == {"NEW_BOTH"}


def test_an_unreadable_or_unbalanced_condition_is_a_warning_and_the_rest_loads():
    rules = loaded("""
if version >= `rm -rf /`
  body   INSIDE_BAD   /money/
endif
endif
body   AFTER        /money/
ifplugin Mail::SpamAssassin::Plugin::HTMLEval
  body   UNCLOSED     /money/
""")
    assert matches(rules, "money") == {"AFTER", "UNCLOSED"}
    warnings = "\n".join(rules.report.warnings)
    assert "local.cf:2: unreadable 'if' expression" in warnings
    assert "local.cf:5: 'endif' without 'if'" in warnings
    assert "local.cf: 1 if/ifplugin block(s) without endif" in warnings


@pytest.mark.parametrize("hostile", [
    "!" * 100_000 + "1",  # a negation a hundred thousand deep
    "(" * 5_000 + "1" + ")" * 5_000,
    "1 1", "(1", "1)", "version >=", "plugin(", "version >= 3.4; system('id')",
])
def test_a_hostile_condition_skips_its_block_and_never_stops_the_loader(hostile):
    rules = loaded(f"if {hostile}\n  body INSIDE /money/\nendif\nbody AFTER /money/\n")
    assert matches(rules, "money") == {"AFTER"}
    assert [w for w in rules.report.warnings if w.startswith("local.cf:1: ")]


def test_a_later_meta_zero_replaces_an_earlier_definition_as_in_spamassassin(tmp_path):
    rules = loaded("body   MONEY   /money/\nmeta   MONEY   0\n")
    assert "MONEY" not in matches(rules, "money")
    # also a rule whose tags are replaced only once all files are read
    (tmp_path / "local.cf").write_text("replace_tag M m\nbody MONEY /<M>oney/\n"
                                       "replace_rules MONEY\nmeta MONEY 0\n")
    tagged = RuleSet()
    tagged.add_paths([tmp_path])
    assert "MONEY" not in matches(tagged, "money")


def test_spamassassins_files_load_the_definitions_of_its_default_plugin_set():
    rules = RuleSet()
    rules.add_paths([SA_RULES])
    # both SPF and DKIM are loaded: SpamAssassin's __NOT_SPOOFED reads DKIM_VALID, not the
    # fallback for "DKIM not loaded" written after it in 72_active.cf
    assert "DKIM_VALID" in rules.rules["__NOT_SPOOFED"].expr
    # no "if/ifplugin" line is read as a rule or left unbalanced
    assert not [w for w in rules.report.warnings if "'if'" in w or "'else'" in w or "endif" in w]
