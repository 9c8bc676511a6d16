"""HL7 v2 adapter: the MLLP listener and one short handler per message type; never imports Flask."""
