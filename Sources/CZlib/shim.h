#ifndef TORTOISE_CZLIB_SHIM_H
#define TORTOISE_CZLIB_SHIM_H
#include <zlib.h>
#endif
