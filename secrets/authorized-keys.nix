# SSH public keys allowed to log in as root on P1/P2 (the only login).
# Replace with your operators' keys before building a production image.
[ ]
