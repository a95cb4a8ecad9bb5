"""What a modem's answers mean: error codes, registration, SIM and signal of TS 27.005/27.007.

Tables for the SMS modem driver (drivers/gsm_modem.py): the ``<err>`` of ``+CMS ERROR``
(3GPP TS 27.005 §3.2.5, with the RP causes of TS 24.011 Annex E-2 and the TP-FCS values of
TS 23.040 §9.2.3.22) and of ``+CME ERROR`` (TS 27.007 §9.2.1), each with whether retrying
later may help; the ``<stat>`` of ``+CREG``/``+CEREG`` (TS 27.007 §7.2, §10.1.22); the
answers of ``+CPIN?`` (§8.3); and ``+CSQ``'s ``<rssi>`` in dBm (§8.5).
"""

from __future__ import annotations

from enum import StrEnum

# TS 27.005 §3.2.5 <err> of +CMS ERROR: 0-127 are RP causes of TS 24.011 Annex E-2, 128-255
# TP-FCS values of TS 23.040 §9.2.3.22, 300-500 the ME/TA's own. The flag says whether the
# same send may succeed later without anyone acting (congestion, no coverage for now).
CMS_ERRORS: dict[int, tuple[str, bool]] = {
    1: ("unassigned (unallocated) number", False),
    8: ("operator determined barring", False),
    10: ("call barred", False),
    17: ("network failure", True),
    21: ("short message transfer rejected", False),
    22: ("memory capacity exceeded", True),
    27: ("destination out of service", True),
    28: ("unidentified subscriber", False),
    29: ("facility rejected", False),
    30: ("unknown subscriber", False),
    38: ("network out of order", True),
    41: ("temporary failure", True),
    42: ("congestion", True),
    47: ("resources unavailable, unspecified", True),
    50: ("requested facility not subscribed", False),
    69: ("requested facility not implemented", False),
    81: ("invalid short message transfer reference value", True),
    95: ("invalid message, unspecified", False),
    96: ("invalid mandatory information", False),
    97: ("message type non-existent or not implemented", False),
    98: ("message not compatible with short message protocol state", True),
    99: ("information element non-existent or not implemented", False),
    111: ("protocol error, unspecified", True),
    127: ("interworking, unspecified", True),
    128: ("telematic interworking not supported", False),
    129: ("short message type 0 not supported", False),
    130: ("cannot replace short message", False),
    143: ("unspecified TP-PID error", False),
    144: ("data coding scheme (alphabet) not supported", False),
    145: ("message class not supported", False),
    159: ("unspecified TP-DCS error", False),
    160: ("command cannot be actioned", False),
    161: ("command unsupported", False),
    175: ("unspecified TP-Command error", False),
    176: ("TPDU not supported", False),
    192: ("SC busy", True),
    193: ("no SC subscription", False),
    194: ("SC system failure", True),
    195: ("invalid SME address", False),
    196: ("destination SME barred", False),
    197: ("SM rejected - duplicate SM", False),
    198: ("TP-VPF not supported", False),
    199: ("TP-VP not supported", False),
    208: ("(U)SIM SMS storage full", False),
    209: ("no SMS storage capability in (U)SIM", False),
    210: ("error in MS", True),
    211: ("memory capacity exceeded", True),
    212: ("(U)SIM application toolkit busy", True),
    213: ("(U)SIM data download error", True),
    255: ("unspecified error cause", True),
    300: ("ME failure", True),
    301: ("SMS service of ME reserved", True),
    302: ("operation not allowed", False),
    303: ("operation not supported", False),
    304: ("invalid PDU mode parameter", False),
    305: ("invalid text mode parameter", False),
    310: ("(U)SIM not inserted", False),
    311: ("(U)SIM PIN required", False),
    312: ("PH-(U)SIM PIN required", False),
    313: ("(U)SIM failure", False),
    314: ("(U)SIM busy", True),
    315: ("(U)SIM wrong", False),
    316: ("(U)SIM PUK required", False),
    317: ("(U)SIM PIN2 required", False),
    318: ("(U)SIM PUK2 required", False),
    320: ("memory failure", True),
    321: ("invalid memory index", False),
    322: ("memory full", True),
    330: ("SMSC address unknown", False),
    331: ("no network service", True),
    332: ("network timeout", True),
    340: ("no +CNMA acknowledgement expected", False),
    500: ("unknown error", True),
}

# TS 27.007 §9.2.1 <err> of +CME ERROR.
CME_ERRORS: dict[int, tuple[str, bool]] = {
    0: ("phone failure", True),
    1: ("no connection to phone", True),
    2: ("phone-adaptor link reserved", True),
    3: ("operation not allowed", False),
    4: ("operation not supported", False),
    5: ("PH-SIM PIN required", False),
    6: ("PH-FSIM PIN required", False),
    7: ("PH-FSIM PUK required", False),
    10: ("SIM not inserted", False),
    11: ("SIM PIN required", False),
    12: ("SIM PUK required", False),
    13: ("SIM failure", False),
    14: ("SIM busy", True),
    15: ("SIM wrong", False),
    16: ("incorrect password", False),
    17: ("SIM PIN2 required", False),
    18: ("SIM PUK2 required", False),
    20: ("memory full", True),
    21: ("invalid index", False),
    22: ("not found", False),
    23: ("memory failure", True),
    24: ("text string too long", False),
    25: ("invalid characters in text string", False),
    26: ("dial string too long", False),
    27: ("invalid characters in dial string", False),
    30: ("no network service", True),
    31: ("network timeout", True),
    32: ("network not allowed - emergency calls only", False),
    40: ("network personalisation PIN required", False),
    100: ("unknown", True),
}


def cms_reason(code: int) -> tuple[str, bool]:
    """What ``+CMS ERROR: code`` means, and whether retrying later may help."""
    if code in CMS_ERRORS:
        return CMS_ERRORS[code]
    if code < 128:
        return f"network refused the message (RP cause {code})", True
    if code < 256:
        return f"service centre refused the message (TP failure cause {code})", False
    return f"manufacturer-specific error {code}", True


def cme_reason(code: int) -> tuple[str, bool]:
    """What ``+CME ERROR: code`` means, and whether retrying later may help."""
    return CME_ERRORS.get(code, (f"manufacturer-specific error {code}", True))


class Registration(StrEnum):
    """Network registration, the <stat> of +CREG/+CEREG (TS 27.007 §7.2, §10.1.22)."""

    HOME = "registered_home"
    ROAMING = "registered_roaming"
    SMS_ONLY_HOME = "registered_sms_only_home"
    SMS_ONLY_ROAMING = "registered_sms_only_roaming"
    SEARCHING = "searching"
    NOT_SEARCHING = "not_searching"
    DENIED = "denied"
    EMERGENCY_ONLY = "emergency_only"
    UNKNOWN = "unknown"


REGISTRATION_STAT: dict[int, Registration] = {
    0: Registration.NOT_SEARCHING,
    1: Registration.HOME,
    2: Registration.SEARCHING,
    3: Registration.DENIED,
    4: Registration.UNKNOWN,
    5: Registration.ROAMING,
    6: Registration.SMS_ONLY_HOME,
    7: Registration.SMS_ONLY_ROAMING,
    8: Registration.EMERGENCY_ONLY,
    9: Registration.HOME,  # registered, CSFB not preferred: SMS still works
    10: Registration.ROAMING,
}
REGISTERED = frozenset({
    Registration.HOME, Registration.ROAMING,
    Registration.SMS_ONLY_HOME, Registration.SMS_ONLY_ROAMING,
})
# Which of two answers (circuit-switched CREG, LTE CEREG) says more when neither registered.
REGISTRATION_WEIGHT = {
    Registration.UNKNOWN: 0, Registration.NOT_SEARCHING: 1, Registration.SEARCHING: 2,
    Registration.EMERGENCY_ONLY: 3, Registration.DENIED: 4,
}


class SimState(StrEnum):
    UNKNOWN = "unknown"
    READY = "ready"
    ABSENT = "absent"
    PIN_REQUIRED = "pin_required"
    PUK_REQUIRED = "puk_required"
    LOCKED = "locked"  # another lock of +CPIN (PH-SIM PIN, network personalisation ...)
    FAILURE = "failure"
    BUSY = "busy"


SIM_BY_CME = {
    10: SimState.ABSENT, 11: SimState.PIN_REQUIRED, 12: SimState.PUK_REQUIRED,
    13: SimState.FAILURE, 14: SimState.BUSY, 15: SimState.FAILURE,
}
SIM_BY_CMS = {
    310: SimState.ABSENT, 311: SimState.PIN_REQUIRED, 313: SimState.FAILURE,
    314: SimState.BUSY, 315: SimState.FAILURE, 316: SimState.PUK_REQUIRED,
}


def csq_to_dbm(rssi: int) -> int | None:
    """+CSQ <rssi> in dBm (TS 27.007 §8.5): 0..31 → −113 + 2·rssi, 100..191 → rssi − 216
    (TD-SCDMA range), 99 and 199 unknown."""
    if 0 <= rssi <= 31:
        return -113 + 2 * rssi
    if 100 <= rssi <= 191:
        return rssi - 216
    return None


def best_registration(a: Registration, b: Registration) -> Registration:
    """Of the circuit-switched (CREG) and LTE (CEREG) answers, the one that lets texts
    through, else the more telling failure."""
    for registration in (a, b):
        if registration in (Registration.HOME, Registration.SMS_ONLY_HOME):
            return registration
    for registration in (a, b):
        if registration in REGISTERED:
            return registration
    return max(a, b, key=lambda r: REGISTRATION_WEIGHT.get(r, 0))
