#ifndef TORTOISE_CLMDB_SHIM_H
#define TORTOISE_CLMDB_SHIM_H
#include <lmdb.h>
#endif
