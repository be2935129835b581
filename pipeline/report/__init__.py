"""Pictures for people: overlays and plots (`viz`), the static report page (`page`) and the journey /
gallery drawing behind `python -m pipeline.report.inspect IMAGE` (`inspect`)."""
