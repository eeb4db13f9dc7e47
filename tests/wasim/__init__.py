"""A WhatsApp server stand-in on loopback for the real neonize client (test infrastructure)."""

from .server import DeviceRecord, SentMessage, SimulatorError, WhatsAppSimulator

__all__ = ["DeviceRecord", "SentMessage", "SimulatorError", "WhatsAppSimulator"]
