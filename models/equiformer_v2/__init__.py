"""EquiformerV2 with OMat24 heads; the registry imports :mod:`models.equiformer_v2.model` on demand."""
