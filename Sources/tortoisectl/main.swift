print("tortoisectl: not yet")
