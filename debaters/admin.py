# DebaterProfile's admin is registered in arena/admin.py: it is frozen once a debate used the
# profile, and only the arena app knows debates (debaters imports no other app).
