"""A Modbus TCP slave served by libmodbus (the C library many field devices and
converters are built on), loaded through ctypes: software we did not write, answering
as it does, including exception 2 for any read that leaves its register map.

The map is one window of holding registers starting at ``start``; whatever lies outside
it is a hole. Served from a thread, one connection at a time, until ``stop``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import socket
import threading
from collections.abc import Sequence

from tests.support import free_port

MODBUS_TCP_MAX_ADU_LENGTH = 260


class _Mapping(ctypes.Structure):
    # modbus_mapping_t of modbus.h (3.1.x).
    _fields_ = [
        ("nb_bits", ctypes.c_int), ("start_bits", ctypes.c_int),
        ("nb_input_bits", ctypes.c_int), ("start_input_bits", ctypes.c_int),
        ("nb_input_registers", ctypes.c_int), ("start_input_registers", ctypes.c_int),
        ("nb_registers", ctypes.c_int), ("start_registers", ctypes.c_int),
        ("tab_bits", ctypes.POINTER(ctypes.c_uint8)),
        ("tab_input_bits", ctypes.POINTER(ctypes.c_uint8)),
        ("tab_input_registers", ctypes.POINTER(ctypes.c_uint16)),
        ("tab_registers", ctypes.POINTER(ctypes.c_uint16)),
    ]


def load_libmodbus() -> ctypes.CDLL | None:
    """libmodbus.so.5 (Debian libmodbus5 / libmodbus-dev), or None when not installed."""
    name = ctypes.util.find_library("modbus") or "libmodbus.so.5"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.modbus_new_tcp.restype = ctypes.c_void_p
    lib.modbus_new_tcp.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.modbus_mapping_new_start_address.restype = ctypes.POINTER(_Mapping)
    lib.modbus_mapping_new_start_address.argtypes = [ctypes.c_uint, ctypes.c_int] * 4
    lib.modbus_tcp_listen.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.modbus_tcp_accept.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.modbus_receive.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8)]
    lib.modbus_reply.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8),
                                 ctypes.c_int, ctypes.POINTER(_Mapping)]
    lib.modbus_set_slave.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.modbus_close.argtypes = [ctypes.c_void_p]
    lib.modbus_free.argtypes = [ctypes.c_void_p]
    lib.modbus_mapping_free.argtypes = [ctypes.POINTER(_Mapping)]
    return lib


class LibmodbusSlave:
    """Holding registers ``start`` .. ``start + len(values) - 1`` of one slave; every
    other address is unmapped."""

    def __init__(self, lib: ctypes.CDLL, start: int, values: Sequence[int]) -> None:
        self.lib = lib
        self.port = free_port()
        self.requests = 0
        self._stop = False
        self._ctx = lib.modbus_new_tcp(b"127.0.0.1", self.port)
        self._map = lib.modbus_mapping_new_start_address(0, 0, 0, 0, start, len(values),
                                                         0, 0)
        for i, value in enumerate(values):
            self._map.contents.tab_registers[i] = value
        self._listen_fd = lib.modbus_tcp_listen(self._ctx, 1)
        if self._listen_fd < 0:
            raise OSError(f"libmodbus could not listen on 127.0.0.1:{self.port}")
        self._thread = threading.Thread(target=self._serve, name="libmodbus", daemon=True)

    def __enter__(self) -> LibmodbusSlave:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        # Unblock an accept waiting for the next connection.
        with socket.socket() as wake:
            wake.settimeout(1)
            with contextlib.suppress(OSError):
                wake.connect(("127.0.0.1", self.port))
        self._thread.join(5)
        socket.close(self._listen_fd)
        self.lib.modbus_mapping_free(self._map)
        self.lib.modbus_free(self._ctx)

    def _serve(self) -> None:
        listen_fd = ctypes.c_int(self._listen_fd)
        query = (ctypes.c_uint8 * MODBUS_TCP_MAX_ADU_LENGTH)()
        while not self._stop:
            if self.lib.modbus_tcp_accept(self._ctx, ctypes.byref(listen_fd)) < 0:
                return
            while not self._stop:
                length = self.lib.modbus_receive(self._ctx, query)
                if length < 0:
                    break  # the master closed the connection
                if length > 0:
                    self.requests += 1
                    self.lib.modbus_reply(self._ctx, query, length, self._map)
            self.lib.modbus_close(self._ctx)
