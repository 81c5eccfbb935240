"""Herald's queue contract, shared by every service and importing none of them."""
