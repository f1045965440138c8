"""cdc-sync: Debezium change streams to unified customer profiles and email triggers."""
__version__ = "0.1.0"
