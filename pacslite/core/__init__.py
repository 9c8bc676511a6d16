"""What everything stands on: configuration, the database, time, UIDs, names, validation,
audit, alerts, background threads, jobs, storage and query matching. Never imports Flask,
pynetdicom, ris or pacs."""
