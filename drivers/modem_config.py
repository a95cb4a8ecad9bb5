"""The configuration of a site's SMS modem, apart from its driver.

A site's configuration is loaded (``edge check``, every start and reload) whether or not
it sends texts, so the model lives here, light: the driver (drivers/gsm_modem.py) and the
PDU library it uses are imported only when a modem is actually opened.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from vocab.configbase import StrictModel
from vocab.durations import Duration


class ModemConfig(StrictModel):
    """The SMS modem of a site."""

    port: str = Field(
        min_length=1,
        description="The modem's AT port, best by its stable name: "
        "/dev/serial/by-id/usb-Quectel_..._EC25...-if02-port0",
    )
    baudrate: int = Field(115200, gt=0)
    command_timeout_s: Duration = Field(5.0, description="Answer time of ordinary commands")
    send_timeout_s: Duration = Field(
        60.0, description="Time the network may take to accept one part (after the PDU)"
    )
    smsc: str | None = Field(
        None, description="Service centre number; by default the one stored on the SIM"
    )
    status_interval_s: Duration = Field(
        60.0, description="How often registration, signal and stored texts are checked"
    )
    max_parts: int = Field(10, ge=1, le=255, description="Longest text, in parts, to send")

    @field_validator("smsc")
    @classmethod
    def _smsc_is_a_number(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from drivers.smspdu import normalise_phone

        return normalise_phone(value, "smsc")
