"""Images: the index, the one ingest (filing), arrivals, re-filing, import, imaging,
integrity, capacity, archive, the off-site copy, query/retrieve, the one outbound sender,
routing, storage commitment and DICOMweb. Imports core and ris."""
