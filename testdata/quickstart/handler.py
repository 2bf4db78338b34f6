def handler(event):
    name = event.get("name", "World")
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": f'{{"message": "Hello, {name}!"}}'}
