"""Tools for running everything on one machine: the demo and embedded Redis
(one server, Sentinel or Cluster sets). Top of the stack: may import anything."""
