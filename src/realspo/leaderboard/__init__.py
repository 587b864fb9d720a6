"""``realspo leaderboard``: every registered selection strategy on the proving ground, one round and several."""
