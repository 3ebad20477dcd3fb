"""`{{ value|score }}`: a stored score or cutoff with every digit its float32 has.

Rounded to 4 decimals, a photo just under the cutoff read "0.4350 · not in" right under
"cutoff 0.4350" (12.9). The shortest decimal that identifies the float32 tells any two
different scores apart, and a score equal to the cutoff reads the same as the cutoff.
"""
from __future__ import annotations

import numpy as np
from django import template

register = template.Library()


@register.filter
def score(value) -> str:
    if value is None or value == "":
        return ""
    return str(np.float32(value))
