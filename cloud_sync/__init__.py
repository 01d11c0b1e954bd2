"""MQTT: connection, topics, durable outbox, Home Assistant discovery, update agent, publisher, collector."""
