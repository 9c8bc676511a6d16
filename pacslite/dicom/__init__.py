"""The pynetdicom adapter: the network side of the DICOM services. Never imports flask."""
