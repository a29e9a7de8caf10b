"""``acids-flowsynth serve``: an OSC/UDP server on 127.0.0.1 speaking the messages of FlowSynth's plugin.

The reference Max4Live device talks to its Python model server over UDP (in port 1232, out port 1233,
127.0.0.1) and applies the ``/params`` it receives to the synth. This server answers the same messages:

==================================  ==========================================================================
received                            sent back (to 127.0.0.1:OUT)
==================================  ==========================================================================
``/encode <wav path>``              ``/params name value ...`` (the model's parameters, normalised [0, 1]: the
                                    VST's own values for amsynth), then ``/z_pos c1 c2 ...`` (the sound's
                                    control-space coordinates; auto-encoders only)
``/decode x y``                     ``/params ...`` for control coordinates (x, y) on axes 0 and 1, others 0
``/decode x y d1 d2`` (d1, d2 ints) the same on axes d1 and d2 (the reference's "dims" arguments)
``/decode c1 c2 ... ck`` (floats)   the first k axes
``/ping``                           ``/pong``
``/stop``                           ``/stopped``, and the server returns
==================================  ==========================================================================

Errors are answered with ``/error message`` (the server keeps running). Control coordinates are in
units of standard deviations of the latent axes or of their PCA (``--data``); see
:mod:`acids_flowsynth.control`. Only the loopback address is used, for listening and for replies.

The server is one loop over a socket with a 0.2 s timeout, so it stops within 0.2 s of ``/stop``, of
:meth:`FlowServer.stop` or of ``max_seconds``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import torch

from acids_core.errors import AcidsError, UsageError
from acids_core.log import get_logger
from acids_flowsynth import osc

log = get_logger(__name__)

HOST = "127.0.0.1"
IN_PORT, OUT_PORT = 1232, 1233


class FlowServer:
    """The model behind the OSC messages (see the module docstring)."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        in_port: int = IN_PORT,
        out_port: int = OUT_PORT,
        data: str | os.PathLike[str] | None = None,
    ) -> None:
        from acids_flowsynth import checkpoint
        from acids_flowsynth.control import ControlSpace

        self.model, self.meta = checkpoint.load(model_path)
        self.names = list(self.meta.get("subset", []))
        self.space = None
        if self.model.is_ae:
            self.space = ControlSpace.pca(self.model, data) if data else ControlSpace.latent(self.model)
        self.out = (HOST, int(out_port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, int(in_port)))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.handled = 0

    # ---- messages

    def _send(self, address: str, *args: Any) -> None:
        self.sock.sendto(osc.encode(address, *args), self.out)

    def _params(self, vector: torch.Tensor) -> None:
        args: list[Any] = []
        for name, v in zip(self.names, vector.tolist(), strict=True):
            args += [name, float(v)]
        self._send("/params", *args)

    def handle(self, address: str, args: list[Any]) -> None:
        if address == "/ping":
            self._send("/pong")
        elif address == "/stop":
            self._send("/stopped")
            self._stop.set()
        elif address == "/encode":
            if len(args) != 1 or not isinstance(args[0], str):
                raise UsageError("/encode takes one argument: the path of a sound file")
            from acids_flowsynth.infer import note_mel

            if not Path(args[0]).is_file():
                raise UsageError(f"{args[0]}: no such file")
            mel = note_mel(args[0], self.meta)
            if self.space is None:
                self._params(self.model.infer(torch.from_numpy(mel)[None])[0])
                return
            coords, params = self.space.encode(mel)
            self._params(params)
            self._send("/z_pos", *[float(c) for c in coords.tolist()])
        elif address == "/decode":
            if self.space is None:
                raise UsageError(f"a {self.model.kind} model has no latent space to decode")
            nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
            if len(nums) != len(args) or not nums:
                raise UsageError("/decode takes numbers: x y [d1 d2], or c1 ... ck")
            coords = torch.zeros(self.space.dim)
            if len(args) == 4 and all(isinstance(a, int) for a in args[2:]):
                dims = [int(args[2]), int(args[3])]
                if not all(0 <= d < self.space.dim for d in dims):
                    raise UsageError(f"/decode dims must be in [0, {self.space.dim})")
                coords[dims[0]], coords[dims[1]] = float(args[0]), float(args[1])
            else:
                if len(nums) > self.space.dim:
                    raise UsageError(f"/decode got {len(nums)} coordinates for {self.space.dim} axes")
                coords[: len(nums)] = torch.tensor([float(a) for a in nums])
            self._params(self.space.params(coords[None])[0])
        else:
            raise UsageError(f"unknown message {address}")

    # ---- loop

    def stop(self) -> None:
        self._stop.set()

    def serve(self, max_seconds: float | None = None, max_messages: int | None = None) -> int:
        """Answer messages until ``/stop``, :meth:`stop`, ``max_seconds`` or ``max_messages``; return how many
        were handled. Closes the socket."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        log.info("serving on udp://%s:%d, replies to %s:%d", HOST, self.port, *self.out)
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    break
                if max_messages is not None and self.handled >= max_messages:
                    break
                try:
                    packet, _ = self.sock.recvfrom(65536)
                except TimeoutError:
                    continue
                self.handled += 1
                try:
                    address, args = osc.decode(packet)
                    self.handle(address, args)
                except (AcidsError, osc.OSCError, ValueError, RuntimeError) as exc:
                    msg = exc.message if isinstance(exc, AcidsError) else str(exc)
                    log.warning("%s", msg)
                    self._send("/error", msg)
        finally:
            self.sock.close()
        return self.handled
