"""Sample function for the compose stack (python runtime): greets and echoes what it got."""


def handler(event, context):
    # `event` is the CloudEvent's data (decoded JSON, text, or None); `context` holds the attributes.
    name = event.get("name", "World") if isinstance(event, dict) else "World"
    print(f"hello-python: {context.type} from {context.source} (attempt {context.attempt})")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": {"message": f"Hello, {name}!", "type": context.type, "source": context.source,
                 "data": event, "traceparent": context.get("traceparent")},
    }
