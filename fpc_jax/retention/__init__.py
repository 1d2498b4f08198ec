"""Knowledge-retention methods (L2, EWC, BC, KS; EM is in the replay buffer) and their anchors."""
