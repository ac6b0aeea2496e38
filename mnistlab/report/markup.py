"""HTML building blocks for the report page: every piece of text goes through
html.escape, every picture is embedded as a data: URI, nothing is fetched."""

import base64
import html
import time
from string import Template

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="mnistlab $version">
<title>$title</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; background: #fff; }
h1 { margin: 24px 0 4px; font-size: 26px; }
h2 { margin: 36px 0 10px; padding-top: 8px; border-top: 1px solid #dde1e8; font-size: 20px; }
.sub { color: #5b6475; margin: 0 0 8px; }
nav { margin: 12px 0 0; font-size: 14px; }
nav a { margin-right: 14px; color: #2456a6; text-decoration: none; }
.cards { display: flex; gap: 16px; flex-wrap: wrap; margin: 12px 0; }
.card { border: 1px solid #dde1e8; border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.card b { display: block; font-size: 24px; }
.card span { color: #5b6475; font-size: 13px; }
.figs { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; }
/* two abreast */
.figs img { max-width: calc(50% - 8px); box-sizing: border-box; height: auto; border: 1px solid #eef0f4; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eef0f4; text-align: right; }
th { background: #f5f7fa; }
td.l, th.l { text-align: left; }
tr.best td { background: #eef6ee; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.gallery figure { margin: 0; width: 84px; text-align: center; font-size: 12px; }
.gallery img { width: 56px; height: 56px; image-rendering: pixelated; border: 1px solid #dde1e8; }
.gallery figcaption { color: #5b6475; }
.gallery .wrong { color: #b3261e; font-weight: 600; }
code { background: #f5f7fa; padding: 0 3px; }
footer { margin-top: 40px; color: #8a93a3; font-size: 12px; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="sub">$subtitle</p>
<nav>$nav</nav>
$body
<footer>Written by mnistlab $version on $when.</footer>
</body>
</html>
""")


def esc(value):
    return html.escape(str(value), quote=True)


def page(title, subtitle, sections):
    """The whole page; `sections` are (id, heading, inner HTML) in order."""
    from mnistlab import __version__

    nav = "".join(f'<a href="#{esc(sid)}">{esc(heading)}</a>' for sid, heading, _ in sections)
    body = "\n".join(
        f'<section id="{esc(sid)}">\n<h2>{esc(heading)}</h2>\n{inner}\n</section>' for sid, heading, inner in sections
    )
    return PAGE.substitute(
        title=esc(title),
        subtitle=esc(subtitle),
        nav=nav,
        body=body,
        version=esc(__version__),
        when=esc(time.strftime("%Y-%m-%d %H:%M")),
    )


def data_uri(png_bytes, mime="image/png"):
    return f"data:{mime};base64,{base64.b64encode(png_bytes).decode('ascii')}"


def image(png_bytes, alt, width=None):
    size = f' width="{int(width)}"' if width else ""
    return f'<img src="{data_uri(png_bytes)}" alt="{esc(alt)}"{size}>'


def figures(*imgs):
    return '<div class="figs">' + "".join(imgs) + "</div>"


def cards(items):
    """Big-number summary: (value, caption) pairs."""
    cards = "".join(
        f'<div class="card"><b>{esc(value)}</b><span>{esc(caption)}</span></div>' for value, caption in items
    )
    return f'<div class="cards">{cards}</div>'


def table(headers, rows, left=1, row_class=None):
    """A table whose first `left` columns are left-aligned (labels) and the rest right-aligned (numbers).

    Cells are plain values, escaped here; row_class(i) may name a CSS class for row i.
    """

    def cell(tag, i, value):
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{esc(value)}</{tag}>"

    head = "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(headers)) + "</tr>"
    body = []
    for n, row in enumerate(rows):
        cls = row_class(n) if row_class else None
        attr = f' class="{esc(cls)}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    return "<table>\n" + head + "\n" + "\n".join(body) + "\n</table>"


def paragraph(text):
    return f"<p>{esc(text)}</p>"


def gallery(items):
    """Thumbnails with captions: (png_bytes, alt, caption lines, index of the line to flag)."""
    out = []
    for png, alt, lines, flagged in items:
        caption = "<br>".join(
            f'<span class="wrong">{esc(t)}</span>' if i == flagged else esc(t) for i, t in enumerate(lines)
        )
        out.append(f"<figure>{image(png, alt)}<figcaption>{caption}</figcaption></figure>")
    return '<div class="gallery">' + "".join(out) + "</div>"
