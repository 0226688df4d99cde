"""Publishes sensor readings to the RabbitMQ stream queue `readings` (declared if missing),
about 100 a second, 1 % of them malformed. Needs `pip install pika`."""
import json
import random
import time
from datetime import datetime, timezone

import pika

connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2f"))
channel = connection.channel()
channel.queue_declare("readings", durable=True, arguments={"x-queue-type": "stream"})
channel.confirm_delivery()
n = 0
while True:
    n += 1
    if n % 100 == 0:
        body = b'{"sensor": "s1", "celsius": '  # malformed on purpose
    else:
        body = json.dumps({
            "sensor": f"s{random.randint(1, 5)}",
            "celsius": round(random.gauss(21.0, 3.0), 2),
            "at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
        }).encode()
    channel.basic_publish("", "readings", body)
    time.sleep(0.01)
