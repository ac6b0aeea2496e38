"""mnistlab report: one self-contained HTML page about a run or a search."""


def add_parser(sub):
    from mnistlab.cli import add_unsafe_option, positive_int

    p = sub.add_parser(
        "report",
        help="write FOLDER/report.html about a run or a search",
        description="FOLDER is a run folder (from mnistlab train) or a search folder "
        "(results.json). The page embeds its pictures and opens offline.",
    )
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the run's test set lies (default: as config.json says, then the usual places)",
    )
    p.add_argument("--gallery", type=positive_int, metavar="N", help="misclassified digits shown (default: 60)")
    add_unsafe_option(p)
    return p


def run(args):
    from mnistlab.report.html import write_report

    options = {"gallery": args.gallery} if args.gallery else {}
    path = write_report(args.folder, data_dir=args.data_dir, safe_mode=not args.unsafe, **options)
    print(f"report: {path}")
