"""The engines behind publisher.py and consumer.py, usable without their command lines.

Read publisher.py and consumer.py first: they are the work-queue pattern, and they hand the details to
these modules, one idea each:

- settings.py    plain settings objects, and the checks on their values
- cli.py         the command line: flags and environment -> settings; errors -> one line and an exit code
- flags.py       argument types shared by the command lines (standard library only: report.py needs no pika)
- output.py      log lines, text the terminal cannot show, a closed stdout
- errors.py      the errors the engines raise, one type per thing the user must fix
- connection.py  URL lists, connecting with one backoff, masking secrets
- topology.py    every queue we declare (work, .dead, retries) and what a mismatch means
- task.py        the task format: encode, decode, check
- publishing.py  the publisher's confirm window
- worker.py      the consume loop: a task at a time, acked after the work
- failures.py    what becomes of a task that fails: retry and park decisions, confirmed copies
- events.py      the --events file's format, writer and reader side by side
- report.py      who did what and how fair it was (report.py at the top is its command line)
- page.py        the run as a page: an SVG timeline in one self-contained HTML file (report.py --html)
- brokers.py     throwaway RabbitMQ nodes, clusters, installing what is missing
- docker_engine.py  a Docker engine and a RabbitMQ image of the tests' own, for the demo's Docker path
- demo.py        the demo's orchestration (run_demo.sh at the top starts it)
- demo_broker.py the demo's broker: the one that answers, or one it starts, records and stops
- bootstrap.py   the scripts' way into .venv when this Python lacks pika
- _pika.py       the only place pika's private names appear, version-checked, with public fallbacks

Nothing here is imported on package import: brokers.py runs on a bare python3, before pika is installed.
"""
