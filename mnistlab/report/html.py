"""report.html: one self-contained page about a run folder or a search folder.

Pictures are embedded as data: URIs and the style sheet is inline, so the page
opens offline, can be mailed as one file, and fetches nothing.

    >>> from mnistlab.report.html import write_report
    >>> write_report("runs/cnn10")          # -> "runs/cnn10/report.html"
"""

from mnistlab.report import markup
from mnistlab.report.run_page import GALLERY
from mnistlab.storage import Folder, cannot_write, folder_kind, write_text


def render_report(folder, model=None, dataset=None, data_dir=None, safe_mode=True, gallery=GALLERY):
    """The page for `folder` as an HTML string (see write_report)."""
    if folder_kind(folder) == "search":
        from mnistlab.report.search_page import search_page

        title, subtitle, sections = search_page(folder)
    else:
        from mnistlab.report.run_page import run_page

        title, subtitle, sections = run_page(
            folder, model=model, dataset=dataset, data_dir=data_dir, safe_mode=safe_mode, gallery=gallery
        )
    return markup.page(title, subtitle, sections)


def write_report(folder, model=None, dataset=None, data_dir=None, safe_mode=True, gallery=GALLERY):
    """Write `folder`/report.html and return its path.

    For a run folder the test set is the one config.json names (`data_dir`
    overrides where it is looked for); `model` and `dataset` may be passed to
    avoid loading them again. `gallery` caps the misclassified digits shown.
    """
    page = render_report(folder, model=model, dataset=dataset, data_dir=data_dir, safe_mode=safe_mode, gallery=gallery)
    path = Folder(folder).report_path  # a run's and a search's both
    try:
        write_text(path, page)
    except OSError as e:
        raise cannot_write(path, e) from None
    return path
