# Helpers shared by the per-folder CMakeLists.

# tessera_cc_test(NAME name SRCS a.cc ... DEPS lib ... [LABELS l ...])
# Builds one GoogleTest binary and registers it with CTest. Tests run from the repository root
# so that fixture paths like tests/fixtures/... resolve.
function(tessera_cc_test)
  cmake_parse_arguments(T "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SRCS})
  target_link_libraries(${T_NAME} PRIVATE ${T_DEPS} GTest::gtest GTest::gtest_main)
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  if(T_LABELS)
    set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()

# tessera_mpi_test_environment(test ...): in TESSERA_ASAN builds, runs the tests (mpirun jobs)
# with LeakSanitizer suppressions for what Open MPI itself never frees (tests/lsan_mpi.supp says
# what and why), unwinding fully so that those reports can be matched by their Open MPI frames.
function(tessera_mpi_test_environment)
  if(TESSERA_ASAN)
    set_property(TEST ${ARGN} APPEND PROPERTY ENVIRONMENT
                 "LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/lsan_mpi.supp"
                 "ASAN_OPTIONS=fast_unwind_on_malloc=0")
  endif()
endfunction()
