"""Page views for the playground: JSON records to Kafka, a few per second per user, with an
occasional malformed record (which the source counts and skips)."""

import json
import os
import random
import time
from datetime import datetime, timezone

from confluent_kafka import Producer

bootstrap = os.environ.get("BOOTSTRAP", "127.0.0.1:19092")
topic = os.environ.get("TOPIC", "page_views")
rate = float(os.environ.get("RATE", "200"))

producer = Producer({"bootstrap.servers": bootstrap})
pages = ["/", "/search", "/item", "/cart", "/checkout", "/help"]
sent = 0
while True:
    user = random.randint(1, 50)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if random.random() < 0.01:
        value = b'{"user_id": oops'
    else:
        value = json.dumps(
            {"user_id": user, "page": random.choice(pages), "ts": now}
        ).encode()
    producer.produce(topic, key=str(user).encode(), value=value)
    sent += 1
    if sent % 1000 == 0:
        producer.flush()
        print(f"sent {sent}", flush=True)
    producer.poll(0)
    time.sleep(1.0 / rate)
