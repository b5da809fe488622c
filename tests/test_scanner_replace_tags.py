"""SpamAssassin's ReplaceTags in rule files: a rule named by replace_rules has its
<TAG>s replaced after all files are read (tags defined before or after the rule), with
the <pre>, <inter> and <post> pieces, nested tags, and an unknown tag left as written;
a rule not named is left alone; a pattern that expands past what the multi-pattern
engine takes is skipped with a reason; and SpamAssassin's own tagged rules no longer
load as literal '<A>' text that can never match."""

from __future__ import annotations

import re
from pathlib import Path

from aliasd.scanner import filerules
from aliasd.scanner.message import decode_header_value, parse_message
from aliasd.scanner.replace_tags import ReplaceTags
from aliasd.scanner.rulefile import MAX_PATTERN, HeaderView, RuleSet

SA_RULES = Path("/usr/share/spamassassin")


def tags(*lines: str) -> ReplaceTags:
    t = ReplaceTags()
    for line in lines:
        directive, rest = line.split(None, 1)
        assert t.setting(directive, rest)
    return t


def hits(rules: RuleSet, body: str) -> list[str]:
    pm = parse_message(f"Subject: hello\nFrom: a@example.org\n\n{body}\n".encode())
    return rules.match(filerules.texts(pm), HeaderView(pm.msg, decode_header_value))


def test_tags_pre_inter_and_post_pieces_are_placed_as_spamassassin_places_them():
    t = tags("replace_tag\tI (?:i|1|!)", "replace_tag A [a@4]", "replace_pre  P1 \\b",
             "replace_inter W1 \\W?", "replace_post P2 {1,2}")
    assert t.expand("/<I><A>/i") == "/(?:i|1|!)[a@4]/i"
    assert t.expand("/<inter W1><I><A>x/") == "/(?:i|1|!)\\W?[a@4]x/"
    assert t.expand("/<post P2><I><A>/") == "/(?:i|1|!){1,2}[a@4]{1,2}/"
    assert t.expand("/<pre P1>z<I>/") == "/z\\b(?:i|1|!)/"
    # a tag whose value holds tags takes another pass; an unknown tag stays as written
    t.setting("replace_tag", "IA <I><A>")
    assert t.expand("/<IA>-<NOPE>/") == "/(?:i|1|!)[a@4]-<NOPE>/"
    # a tag that names itself stops after six passes instead of looping
    t.setting("replace_tag", "LOOP x<LOOP>")
    assert t.expand("/<LOOP>/").count("x") == 6


def test_only_rules_named_by_replace_rules_are_expanded_whatever_the_order_of_lines():
    rules = RuleSet()
    rules.load_text(
        "body   OBFUSCATED  /\\bv<I>agr<A>\\b/i\n"
        "score  OBFUSCATED  2.0\n"
        "body   LITERAL     /<I>tag/\n"
        "score  LITERAL     1.0\n"
        "replace_rules OBFUSCATED\n"
        "replace_tag   I  (?:i|1|\\!|\\|)\n"  # defined after the rule that uses it
        "replace_tag   A  [a@4]\n", "tags.cf")
    rules.compile()
    assert not rules.report.warnings
    assert "OBFUSCATED" in hits(rules, "Cheap V1agr4 here")
    assert "OBFUSCATED" in hits(rules, "buy viagra")
    assert "OBFUSCATED" not in hits(rules, "vagrant")
    assert "LITERAL" in hits(rules, "the <I>tag stays literal")
    assert "LITERAL" not in hits(rules, "the itag")


def test_a_malformed_replace_line_is_a_warning_and_the_rest_loads():
    rules = RuleSet()
    rules.load_text("replace_tag LONELY\nreplace_start\nreplace_tag A [a@4]\nreplace_rules SPAM_A\n"
                    "body SPAM_A /sp<A>m/\nscore SPAM_A 1\n", "broken.cf")
    rules.compile()
    assert [w.split(": ", 1)[0] for w in rules.report.warnings] == ["broken.cf:1", "broken.cf:2"]
    assert "SPAM_A" in hits(rules, "sp4m")


def test_a_rule_read_again_from_a_later_file_is_expanded_there(tmp_path):
    (tmp_path / "10_tags.cf").write_text("replace_tag W  (?:w|vv)\nreplace_rules WIN_WORD\n")
    (tmp_path / "20_rule.cf").write_text("body WIN_WORD /\\b<W>inner\\b/i\nscore WIN_WORD 1.5\n")
    rules = RuleSet().load_paths([tmp_path])
    assert "WIN_WORD" in hits(rules, "You are a VVinner")


def test_a_pattern_too_large_once_expanded_is_skipped_with_a_reason():
    big = "(?:" + "|".join(f"w{i:05d}" for i in range(MAX_PATTERN // 6)) + ")"
    rules = RuleSet()
    rules.load_text(f"replace_tag BIG {big}\nreplace_rules HUGE\nbody HUGE /<BIG>/\nscore HUGE 1\n"
                    "meta READS_HUGE HUGE\nscore READS_HUGE 1\n")
    rules.compile()
    assert "HUGE" not in rules.rules
    why = {name: reason for _, name, reason in rules.report.skipped}
    assert why["HUGE"].startswith("unsupported: pattern of") and "characters" in why["HUGE"]
    assert why["READS_HUGE"].startswith("depends on a skipped or unknown rule")


def test_spamassassins_tagged_rules_load_expanded_never_as_literal_tags():
    rules = RuleSet().load_paths([SA_RULES])
    assert rules.replace_tags.rules and len(rules.replace_tags.tags) > 20
    literal_tag = re.compile(r"<(?:[A-Z]|CURRENCY|NUM_NOT_DATE|SP|W\d)>")
    named = [n for n in rules.replace_tags.rules if n in rules.rules and rules.rules[n].kind != "meta"]
    assert named
    assert not [n for n in named if literal_tag.search(rules.rules[n].pattern or rules.rules[n].prefilter)]
    # SpamAssassin's __BITCOIN, written with letter tags, finds the word spelled with look-alikes
    assert "__BITCOIN" in hits(rules, "Send the amount in B1tc0in to the wallet below")
    assert "__BITCOIN" not in hits(rules, "Send the amount to the wallet below")
