"""The Postfix ``header_checks`` pcre table aliasd writes, and the reader for existing
ones: where each part lives, under the names callers have always used.

* table         rendering the rules as ``/pattern/ REJECT "text"`` lines
* postmap       Postfix's own parser: validating a table, querying it
* table_file    writing a table atomically and running the reload command
* publisher     the one publisher (and its after-commit trigger)
* ordinary_check, table_parse, table_import   importing foreign tables safely
* log_hits      counting refusals in the mail log"""

from __future__ import annotations

from aliasd.postfix.log_hits import collect_log_hits, count_log_hits
from aliasd.postfix.postmap import (
    PROBE_KEY,
    check_rule_line,
    postfix_client_config_dir,
    postmap_problems,
)
from aliasd.postfix.publisher import (
    PublishResult,
    RefusedRule,
    last_results,
    publish,
    request_publish,
    wait_for_publish,
)
from aliasd.postfix.table import clean_text, render_from_database, render_table, rule_line
from aliasd.postfix.table_file import HeaderChecksError, WriteResult, run_reload, write_table
from aliasd.postfix.table_parse import (
    ParsedRule,
    ParsedTable,
    apply_postfix_verdict,
    parse_table,
    split_pattern,
)

# The names before the publisher had its own module (other tests still use them).
sync_blocklist = publish
wait_for_sync = wait_for_publish

__all__ = [
    "PROBE_KEY", "HeaderChecksError", "ParsedRule", "ParsedTable", "PublishResult",
    "RefusedRule", "WriteResult", "apply_postfix_verdict", "check_rule_line", "clean_text",
    "collect_log_hits", "count_log_hits", "last_results", "parse_table", "postfix_client_config_dir",
    "postmap_problems", "publish", "render_from_database", "render_table", "request_publish",
    "rule_line", "run_reload", "split_pattern", "sync_blocklist", "wait_for_publish", "wait_for_sync",
    "write_table",
]  # fmt: skip
