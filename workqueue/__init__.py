"""The engines behind publisher.py and consumer.py, usable without their command lines.

Read publisher.py and consumer.py first: they are the work-queue pattern, and they hand the details to
these modules, one idea each:

- settings.py    plain settings objects, and the checks on their values
- cli.py         the command line: flags and environment -> settings; errors -> one line and an exit code
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
- brokers.py     throwaway RabbitMQ nodes, clusters, containers, installing what is missing
- demo.py        the demo's orchestration (run_demo.sh at the top starts it)
- _pika.py       the only place pika's private names appear, version-checked, with public fallbacks

Nothing here is imported on package import: brokers.py runs on a bare python3, before pika is installed.
"""
