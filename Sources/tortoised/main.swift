print("tortoised: not yet")
