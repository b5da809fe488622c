"""SpamAssassin's ReplaceTags: rule files write a pattern once with named pieces
(``/<V><I><A><G><R><A>/``, ``<CURRENCY>``) and define the pieces apart (``replace_tag``),
so that one definition of "a letter I, or anything spammers write for it" serves a
hundred rules. A rule is expanded only when ``replace_rules`` names it, once the files
of a rule directory are read (RuleSet.add_paths; rules named later are expanded when
they are read, or at compile), as ReplaceTags.pm does at ``finish_parsing_end``:

- ``<pre NAME>``, ``<post NAME>`` and ``<inter NAME>`` anywhere in the pattern pick the
  ``replace_pre`` / ``replace_post`` value put before / after every tag and the
  ``replace_inter`` value put between two adjacent tags;
- each defined ``<TAG>`` becomes its ``replace_tag`` value; a value holding tags itself
  takes another pass (at most six in all); an unknown tag stays as written.

Without this, such a rule is a literal ``<A>`` that matches nothing."""

from __future__ import annotations

import re

MAX_PASSES = 6  # ReplaceTags.pm: do { ... $passes++ } while $doagain && $passes <= 5
_TAG_SPLIT = re.compile(r"(<[^<>]+>)")  # fixed in ReplaceTags.pm, whatever replace_start is
_HAS_TAG = re.compile(r"<[^>]+>")


class ReplaceTags:
    """The ``replace_*`` settings read from rule files, and the rules to expand."""

    def __init__(self) -> None:
        self.start = "<"
        self.end = ">"
        self.tags: dict[str, str] = {}
        self.pre: dict[str, str] = {}
        self.inter: dict[str, str] = {}
        self.post: dict[str, str] = {}
        self.rules: set[str] = set()  # names replace_rules listed

    def setting(self, directive: str, args: str) -> bool:
        """Take a ``replace_*`` line (its directive and the rest of the line); False if
        the directive is not one of these. Raises ValueError for a malformed line."""
        if directive == "replace_rules":
            self.rules.update(args.split())
            return True
        if directive in ("replace_start", "replace_end"):
            value = args.strip()
            if not value:
                raise ValueError(f"{directive} needs a value")
            if directive == "replace_start":
                self.start = value
            else:
                self.end = value
            return True
        table = {"replace_tag": self.tags, "replace_pre": self.pre,
                 "replace_inter": self.inter, "replace_post": self.post}.get(directive)
        if table is None:
            return False
        name, value = ([*args.split(None, 1), "", ""])[:2]
        value = value.strip()
        if not name or not value:
            raise ValueError(f"{directive} needs a name and a value")
        table[name] = value
        return True

    def expand(self, pattern: str) -> str:
        """The pattern with its tags replaced (unchanged if it holds none)."""
        start, end = re.escape(self.start), re.escape(self.end)
        modifier = {kind: re.compile(f"{start}{kind} (.+?){end}") for kind in ("pre", "post", "inter")}
        any_tag = re.compile(f"({start}.+?{end})")
        tag_name = re.compile(f"{start}(.+?){end}")
        text = pattern
        for _ in range(MAX_PASSES):
            chosen: dict[str, str] = {}
            for kind, finder in modifier.items():
                m = finder.search(text)
                if m:
                    chosen[kind] = m.group(1)
                    text = text[: m.start()] + text[m.end():]
            parts = _TAG_SPLIT.split(text)
            while parts and parts[-1] == "":  # Perl's split drops trailing empty fields
                parts.pop()
            pre = self.pre.get(chosen.get("pre", ""), "")
            if pre:
                parts = [any_tag.sub(lambda m, pre=pre: pre + m.group(1), p, count=1) for p in parts]
            post = self.post.get(chosen.get("post", ""), "")
            if post:
                parts = [any_tag.sub(lambda m, post=post: m.group(1) + post, p) for p in parts]
            inter = self.inter.get(chosen.get("inter", ""), "")
            if inter:
                parts = [inter if p == "" else p for p in parts]
            again = False
            for i, part in enumerate(parts):
                m = tag_name.search(part)
                replacement = self.tags.get(m.group(1), "") if m else ""
                if replacement:
                    parts[i] = part.replace(f"{self.start}{m.group(1)}{self.end}", replacement)
                    again = again or bool(_HAS_TAG.search(replacement))
            text = "".join(parts)
            if not again:
                break
        return text
