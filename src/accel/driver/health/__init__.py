"""Device health on the driver's side: evidence readers, the per-check policy and the
per-device state machine (docs/health.md).

Readers (``pcie``, ``qat``, ``fpga``, ``gpu``) turn files Linux lays out, and NVML where
present, into ``Reading``s; ``policy`` says what each check's bad reading means;
``machine`` turns a device's readings over time into its ``DeviceHealth``; ``monitor``
polls every device a discovery found.
"""
