print("hello from the old version")
