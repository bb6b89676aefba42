"""Blinker signals, sent with the app as sender.

- ``touch_recorded(app, touch=dict, user_id=...)``: a touch was captured (request hook,
  ``stash_touch``) or stored (beacon). ``touch`` holds the row fields; ``user_id`` is ``None`` for
  an anonymous visitor.
- ``lead_source_created(app, lead_source=LeadSource)``: a ``LeadSource`` row was committed. The
  instance is transient (not attached to ``db.session``); query it again to change it.
- ``conversion_recorded(app, conversion=Conversion)``: a conversion was recorded or restated
  (committed).
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

touch_recorded = _signals.signal("touch-recorded")
lead_source_created = _signals.signal("lead-source-created")
conversion_recorded = _signals.signal("conversion-recorded")
