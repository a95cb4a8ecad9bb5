"""Modbus RTU line timing and frame checks, for the link of an RS-485 bus.

The line is kept silent for 3.5 character times (1.75 ms above 19200 baud, as the Modbus
serial-line specification fixes it) after every frame before the next request; a CRC
error is noticed as soon as the frame is complete, not after the timeout.
"""

from __future__ import annotations

RTU_CHAR_BITS = 11  # start + 8 data + parity or second stop + stop, as the spec counts
# Write single coil, single register, multiple coils, multiple registers.
WRITE_FUNCTION_CODES = frozenset({5, 6, 15, 16})


def rtu_char_time(baudrate: int) -> float:
    return RTU_CHAR_BITS / baudrate


def rtu_silence_s(baudrate: int) -> float:
    """The 3.5-character inter-frame silence; fixed at 1.75 ms above 19200 baud."""
    return 0.00175 if baudrate > 19200 else 3.5 * rtu_char_time(baudrate)


def crc16_modbus(data: bytes) -> bytes:
    """CRC-16/MODBUS of a frame body, in wire order (low byte first)."""
    from pymodbus.framer import FramerRTU

    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def check_rtu_reply(data: bytes, unit: int, function_code: int) -> str | None:
    """'crc_error' when ``data`` starts with a complete reply of ``unit`` whose CRC fails.

    None while the frame is incomplete, valid, or not recognisably ours (garbage before a
    frame is hunted through by the client; if no frame ever comes it is a timeout).
    """
    if len(data) < 3 or data[0] != unit:
        return None
    if data[1] == function_code:
        # Writes are answered with an echo of fixed length (address and value or count);
        # reads carry their byte count.
        length = 8 if function_code in WRITE_FUNCTION_CODES else 3 + data[2] + 2
    elif data[1] == function_code | 0x80:
        length = 5
    else:
        return None
    if len(data) < length:
        return None
    return None if crc16_modbus(data[: length - 2]) == data[length - 2 : length] \
        else "crc_error"
