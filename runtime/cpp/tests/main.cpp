// Catch2's main, alone in its file: it is the slow one to compile.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
