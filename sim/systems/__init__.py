"""Systems a scenario can name as `[systems.NAME]`, imported on first use.

A case study adds its own with one line here, or a scenario names any `System` subclass
directly as `[systems."module:Class"]`.
"""
BUILTIN: dict[str, str] = {
    "counter": "sim.systems.counter:CounterSystem",
    "rides": "apps.rides.sim:RidesSystem",
    "video": "apps.video.sim:VideoSystem",
}
