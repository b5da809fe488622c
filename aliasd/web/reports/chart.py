"""The spam-per-day chart of a site page, as server-rendered SVG."""

from __future__ import annotations

import datetime as dt

from markupsafe import escape


def spam_chart_svg(
    days: list[tuple[dt.date, int, int]], *, width: int = 720, height: int = 200, title: str = ""
) -> str:
    """A bar chart of spam (and total mail, lighter) per day as standalone SVG markup:
    rendered on the server, readable without JavaScript, with a <title> and <desc> for
    screen readers and a <title> per bar as its tooltip. Colours are presentation
    attributes, so a strict Content-Security-Policy (no inline styles) does not hide them."""
    pad_left, pad_bottom, pad_top = 40, 24, 10
    plot_w, plot_h = width - pad_left - 10, height - pad_bottom - pad_top
    peak = max([t for _d, _s, t in days] + [s for _d, s, _t in days] + [1])
    n = max(len(days), 1)
    bar_w = plot_w / n
    total_spam = sum(s for _d, s, _t in days)
    desc = (
        f"{total_spam} spam messages over {len(days)} days"
        + (f", from {days[0][0].isoformat()} to {days[-1][0].isoformat()}" if days else "")
        + f"; busiest day {peak} messages."
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spam-chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-labelledby="chart-title chart-desc">',
        f'<title id="chart-title">{escape(title or "Spam per day")}</title>',
        f'<desc id="chart-desc">{escape(desc)}</desc>',
        f'<line x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width - 10}" '
        f'y2="{pad_top + plot_h}" stroke="#555" stroke-width="1"/>',
        f'<text x="{pad_left - 6}" y="{pad_top + 8}" text-anchor="end" font-size="11" '
        f'fill="#333">{peak}</text>',
        f'<text x="{pad_left - 6}" y="{pad_top + plot_h}" text-anchor="end" font-size="11" '
        f'fill="#333">0</text>',
    ]
    for i, (day, spam, total) in enumerate(days):
        x = pad_left + i * bar_w
        w = max(bar_w - 1, 1)
        th = plot_h * total / peak
        sh = plot_h * spam / peak
        label = f"{day.isoformat()}: {spam} spam of {total} messages"
        parts.append(f'<g class="day" data-day="{day.isoformat()}" data-spam="{spam}">'
                     f"<title>{escape(label)}</title>")
        if total:
            parts.append(f'<rect x="{x:.1f}" y="{pad_top + plot_h - th:.1f}" width="{w:.1f}" '
                         f'height="{th:.1f}" fill="#c9d6e8"/>')
        if spam:
            parts.append(f'<rect class="spam" x="{x:.1f}" y="{pad_top + plot_h - sh:.1f}" '
                         f'width="{w:.1f}" height="{sh:.1f}" fill="#b3261e"/>')
        parts.append("</g>")
    # A few date labels along the axis.
    if days:
        step = max(1, len(days) // 6)
        for i in range(0, len(days), step):
            x = pad_left + i * bar_w
            parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="11" fill="#333">'
                         f"{days[i][0].strftime('%m-%d')}</text>")
    parts.append("</svg>")
    return "".join(parts)
