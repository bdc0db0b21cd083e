"""Twitter-style home timelines: a timeline process per user (an activated entity), Snowflake
tweet ids, hybrid fan-out (on write below a follower threshold, on read above it), cursor
pages, real-time pushes.

Modules: `service` (TimelineService, the API and the tree), `timeline` (the home timeline
entity), `author` (the author entity: followers, tweets, posting), `fanout` (the durable
batched fan-out), `ids` (the id server), `live` (pushes), `home` (timeline state and merge
as pure functions), `snowflake`, `context` (placement, the entity base), `config`,
`errors`, `sim`.
"""
from .config import TimelineConfig
from .context import check_name, user_id
from .errors import BadRequest, TimelineError, Unavailable
from .service import Page, TimelineService
from .snowflake import Snowflake

__all__ = ["BadRequest", "Page", "Snowflake", "TimelineConfig", "TimelineError", "TimelineService",
           "Unavailable", "check_name", "user_id"]
