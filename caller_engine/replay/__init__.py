"""Load replay: concurrent emulated calls against a Caller Engine server, with per-frame
latency markers, a report and the `make bench` benchmark. See `driver.py` for how calls are
entered and `probes.py` for what is measured."""
