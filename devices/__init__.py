"""edgeav.devices"""
