"""Ids and point references: the names of devices, points, rules and buses.

Ids become MQTT topic levels and store keys. Some brokers close the connection on a topic
level containing '.', ' ' or wildcards (see lessons.md), so ids stay in this set, and
every layer checks them with these same types.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
POINT_REF_PATTERN = r"^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}$"

Ident = Annotated[str, Field(pattern=ID_PATTERN)]
PointRef = Annotated[str, Field(pattern=POINT_REF_PATTERN)]
SeverityName = Literal["warning", "alarm", "critical"]
