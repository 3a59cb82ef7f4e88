// Declarations only (see c10d_shim.cpp, "Why gloo_decl/"): ProcessGroupGloo.hpp
// includes this file but uses nothing from it in what the shim compiles.
#pragma once
