"""Systems a scenario can name as `[systems.NAME]`, imported on first use.

The simulator's own are listed here. Other packages add theirs as entry points in the
group `letitcrash.systems` (so that `sim` never imports them), as this project's
`pyproject.toml` does for the case studies; a scenario can also name any `System`
subclass directly as `[systems."module:Class"]`.
"""
BUILTIN: dict[str, str] = {
    "counter": "sim.systems.counter:CounterSystem",
    "entities": "sim.systems.entities:EntitiesSystem",
}
ENTRY_POINTS = "letitcrash.systems"
